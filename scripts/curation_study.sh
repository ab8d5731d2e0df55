#!/usr/bin/env bash
# The curation study end to end (issue 18): split, train the candidate and the reference, score,
# then `sslmem curate`. Defaults are the paper-scale run on a GPU with the full Fashion-MNIST
# recipe (48,000 training images per encoder, 6,000 candidates); every setting is an
# environment variable, so the CPU-sized study of docs/curation.md is the same script.
#
#   GPU (paper scale):  scripts/curation_study.sh
#   CPU (docs' study):  RECIPE=bundled-cpu DEVICE=cpu EPOCHS=150 FRACTIONS=0.2 SEEDS=0,1,2 \
#                       DRAWS=1 STRATEGIES=top,random scripts/curation_study.sh
#   Print the commands: DRY_RUN=1 scripts/curation_study.sh
#
# Cost: SEEDS x (1 + FRACTIONS x (top + bottom + DRAWS)) retrains of the candidate encoder, plus
# the two encoders of the scored split. An interrupted run resumes: rerun the same command.
set -euo pipefail

RECIPE=${RECIPE:-fashion-mnist}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-400}
FRACTIONS=${FRACTIONS:-0.01,0.05,0.1}
SEEDS=${SEEDS:-0,1,2,3,4}
DRAWS=${DRAWS:-3}
STRATEGIES=${STRATEGIES:-top,random,bottom}
OUT=${OUT:-curation-study}
EXPERIMENT=${EXPERIMENT:-}
SSLMEM=${SSLMEM:-sslmem}

common=(--config "$RECIPE" --set "training.epochs=$EPOCHS" --device "$DEVICE")
track=()
if [[ -n "$EXPERIMENT" ]]; then
  track=(--experiment "$EXPERIMENT")
fi

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [[ -z "${DRY_RUN:-}" ]]; then
  mkdir -p "$OUT"
fi
[[ -f "$OUT/split.json" ]] || run "$SSLMEM" split --config "$RECIPE" --out "$OUT/split.json"
for role in candidate reference; do
  [[ -f "$OUT/$role/encoder.safetensors" ]] ||
    run "$SSLMEM" train --split "$OUT/split.json" --role "$role" --out "$OUT/$role" \
      --no-progress "${common[@]}"
done
[[ -f "$OUT/score/summary.json" ]] ||
  run "$SSLMEM" score --split "$OUT/split.json" --candidate "$OUT/candidate/encoder.safetensors" \
    --reference "$OUT/reference/encoder.safetensors" --out "$OUT/score" --no-progress \
    "${common[@]}"
run "$SSLMEM" curate --scores "$OUT/score" --split "$OUT/split.json" \
  --reference "$OUT/reference/encoder.safetensors" --out "$OUT/study" \
  --fractions "$FRACTIONS" --strategies "$STRATEGIES" --seeds "$SEEDS" --random-draws "$DRAWS" \
  "${track[@]}" "${common[@]}"
