import pytest

from sslmem.errors import ConfigError
from sslmem.registry import Registry


def test_lookup_returns_what_was_added_and_names_are_sorted() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("b", 2)
    registry.add("a", 1)
    assert registry.get("b") == 2
    assert registry.names() == ["a", "b"]
    assert "a" in registry and "c" not in registry


def test_unknown_name_lists_the_valid_ones() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ConfigError, match="unknown widget 'z'") as info:
        registry.get("z")
    assert info.value.fix == "use one of: a"


def test_a_name_cannot_be_registered_twice() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ConfigError, match="widget 'a' is already registered"):
        registry.add("a", 2)
    assert registry.get("a") == 1


def test_a_copy_is_extended_without_touching_the_original() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    clone = registry.copy()
    clone.add("b", 2)
    assert clone.names() == ["a", "b"] and registry.names() == ["a"]
    assert clone.kind == "widget"
