"""rlplastic.registry: one signature-checked way to build a configured object, errors named by config key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rlplastic.registry import Registry, named_errors, plain


class Widget:
    def __init__(self, size: int, colour: str = "red", parts: list | None = None) -> None:
        if size <= 0:
            raise ValueError(f"size={size} must be > 0")
        self.size, self.colour, self.parts = size, colour, parts


class Gadget:
    def __init__(self, owner: object, speed: float = 1.0, **extra: object) -> None:
        self.owner, self.speed, self.extra = owner, speed, extra


def make_registry() -> Registry:
    things = Registry("thing", "thing")
    things.register("widget")(Widget)
    things.register("gadget")(Gadget)
    return things


def test_build_with_good_settings():
    widget = make_registry().build("widget", {"size": 3, "colour": "blue"})
    assert isinstance(widget, Widget) and (widget.size, widget.colour) == (3, "blue")
    assert make_registry().build("widget", {"size": 1}).colour == "red"  # defaults stay defaults


def test_names_get_and_membership():
    things = make_registry()
    assert things.names() == ("widget", "gadget")
    assert "widget" in things and "gizmo" not in things
    assert things.get("gadget") is Gadget
    assert things.keys("widget") == ("size", "colour", "parts")


def test_unknown_key_names_the_config_key_and_the_allowed_keys():
    with pytest.raises(ValueError) as caught:
        make_registry().build("widget", {"size": 3, "colur": "blue", "weight": 2})
    assert (
        str(caught.value) == "unknown thing.widget key(s) ['colur', 'weight']: allowed are ['size', 'colour', 'parts']"
    )


def test_missing_required_key():
    with pytest.raises(ValueError, match=r"^thing.widget needs key\(s\) \['size'\]$"):
        make_registry().build("widget", {"colour": "blue"})
    with pytest.raises(ValueError, match=r"^thing.widget needs key\(s\) \['size'\]$"):
        make_registry().build("widget")


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError) as caught:
        make_registry().build("gizmo", {})
    assert str(caught.value) == "unknown thing 'gizmo': allowed are ['widget', 'gadget']"
    with pytest.raises(ValueError, match="unknown thing 'gizmo'"):
        make_registry().get("gizmo")


def test_duplicate_registration_is_refused():
    things = make_registry()
    with pytest.raises(ValueError, match="thing 'widget' is registered twice"):
        things.register("widget")(Gadget)
    assert things.get("widget") is Widget  # the first registration stands


def test_hydra_containers_become_plain_lists_and_dicts():
    cfg = OmegaConf.create({"size": 2, "parts": [1, {"a": [2, 3]}]})
    widget = make_registry().build("widget", cfg)
    assert widget.parts == [1, {"a": [2, 3]}]
    assert type(widget.parts) is list and type(widget.parts[1]) is dict and type(widget.parts[1]["a"]) is list
    assert plain((1, "ab", OmegaConf.create([b"x"]))) == [1, "ab", [b"x"]]


def test_context_arguments_are_not_config_keys():
    things = make_registry()
    owner = object()
    gadget = things.build("gadget", {"speed": 2.0}, owner=owner)
    assert gadget.owner is owner and gadget.speed == 2.0 and gadget.extra == {}
    assert things.keys("gadget", context=("owner",)) == ("speed",)  # **extra is no key either
    with pytest.raises(ValueError, match=r"unknown thing.gadget key\(s\) \['owner'\]: allowed are \['speed'\]"):
        things.build("gadget", {"owner": 1}, owner=owner)
    with pytest.raises(ValueError, match=r"unknown thing.gadget key\(s\) \['extra'\]"):
        things.build("gadget", {"extra": 1}, owner=owner)  # a **kwargs catch-all does not open the door
    with pytest.raises(ValueError, match=r"thing.gadget needs key\(s\) \['owner'\]"):
        things.check("gadget", {})  # outside build, a context argument must be named as such


def test_a_value_error_from_the_constructor_is_prefixed_with_the_key_and_name():
    with pytest.raises(ValueError) as caught:
        make_registry().build("widget", {"size": 0})
    assert str(caught.value) == "thing.widget: size=0 must be > 0"


def test_named_errors_leaves_messages_that_already_name_the_key():
    with pytest.raises(ValueError, match=r"^rr.ratio=0 must be > 0$"), named_errors("rr.static"):
        raise ValueError("rr.ratio=0 must be > 0")
    with pytest.raises(ValueError, match=r"^rr.static: bad$"), named_errors("rr.static"):
        raise ValueError("bad")
    with pytest.raises(TypeError), named_errors("rr.static"):  # only ValueErrors are config errors
        raise TypeError("bug")
