"""The key registry names every key family, and every family says how it is erased,
kept and exported: adding a key without registering it, or registering personal data
without an erasure rule the erasure sweep carries out, fails here."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.keys import Erasure, Export, Scope
from mtdesk.policy.erasure.sweep import RULES_CARRIED_OUT
from mtdesk.policy.export import SECTIONS

# Helpers of the registry itself, and names that are not keys.
_NOT_KEYS = {"parse", "tenant_pattern", "global_pattern", "global_key", "tenant_prefix",
             "ROOT", "ERASURE_NOTICES", "live", "SHARD_GROUP", "DELETION_GROUP",
             "slot_of", "tag_of", "slot_alias"}


def _sample_args(fn: object) -> list[object]:
    args: list[object] = []
    for param in inspect.signature(fn).parameters.values():  # type: ignore[arg-type]
        args.append(7 if param.annotation in ("int", int) else f"x{len(args)}")
    return args


def _named_keys() -> list[tuple[str, str]]:
    """(name in keys, a key it makes) for every function and constant naming a key."""
    found: list[tuple[str, str]] = []
    for name, value in vars(keys).items():
        if name.startswith("_") or name in _NOT_KEYS:
            continue
        if inspect.isfunction(value) and value.__module__ == keys.__name__:
            found.append((name, value(*_sample_args(value))))
        elif isinstance(value, str):
            found.append((name, value))
    return found


def test_every_key_the_module_names_belongs_to_the_family_that_lists_it() -> None:
    named = _named_keys()
    assert len(named) > 30
    for name, key in named:
        ref = keys.parse(key)
        assert ref is not None, f"keys.{name} makes {key!r}, of no registered family"
        assert name in ref.family.made_by, f"keys.{name} makes a {ref.family.name} key"


def test_every_family_lists_only_names_the_module_has_and_has_one_segment() -> None:
    for family in keys.FAMILIES:
        assert family.made_by, family.name
        for name in family.made_by:
            assert hasattr(keys, name), f"{family.name} lists keys.{name}, which is gone"
    segments = [(f.scope is Scope.GLOBAL, f.segment) for f in keys.FAMILIES]
    assert len(segments) == len(set(segments))
    assert len({f.name for f in keys.FAMILIES}) == len(keys.FAMILIES)


def test_every_family_has_a_rule_the_erasure_sweep_carries_out() -> None:
    for family in keys.FAMILIES:
        assert family.erasure in RULES_CARRIED_OUT, family.name
        if family.personal:
            assert family.erasure is not Erasure.NONE, f"{family.name} holds personal data"
    # Global keys holding personal data are erased entry by entry or by their owner;
    # tenant keys never by a rule meant for global keys, and the other way round.
    tenant_only = {Erasure.CONVERSATION, Erasure.MESSAGE, Erasure.MEMBERS, Erasure.NAMED,
                   Erasure.WITH_TENANT, Erasure.WITH_CHANNEL}
    for family in keys.FAMILIES:
        assert (family.erasure in tenant_only) == (family.scope is not Scope.GLOBAL), family.name


def test_conversation_families_are_erased_and_kept_with_their_conversation() -> None:
    for family in keys.FAMILIES:
        if family.scope is Scope.CONVERSATION:
            assert family.parted and family.erasure is Erasure.CONVERSATION, family.name


def test_every_tenant_family_says_whether_the_export_carries_it() -> None:
    exported = {f.section for f in keys.FAMILIES if f.export is Export.SECTION}
    assert exported == set(SECTIONS)
    for family in keys.FAMILIES:
        if family.scope is Scope.GLOBAL:
            assert family.export is Export.NOT_TENANT, family.name
        else:
            assert family.export is not Export.NOT_TENANT, family.name
        assert bool(family.section) == (family.export is Export.SECTION), family.name


@pytest.mark.parametrize("family", keys.FAMILIES, ids=lambda f: f.name)
def test_a_key_of_each_family_parses_back(family: keys.Family) -> None:
    if family.scope is Scope.GLOBAL:
        name = keys.global_pattern(family).replace("*", "some:id") if family.parted \
            else keys.global_key(family)
        expected = keys.KeyRef(family, "", "some:id" if family.parted else "")
    elif family is keys.TENANT_RECORD:
        name, expected = keys.tenant("t_1"), keys.KeyRef(family, "t_1")
    elif family.parted:
        name = keys.tenant_pattern("t_1", family).replace("*", "messenger:1:2")
        expected = keys.KeyRef(family, "t_1", "messenger:1:2")
    else:
        name, expected = f"{keys.tenant_prefix('t_1')}{family.segment}", keys.KeyRef(family, "t_1")
    assert keys.parse(name) == expected
    assert keys.parse(name.encode()) == expected


@given(st.binary(max_size=80) | st.text(max_size=80))
def test_parse_takes_any_name_without_raising(name: bytes | str) -> None:
    ref = keys.parse(name)
    assert ref is None or ref.family in keys.FAMILIES


def test_names_of_no_family_are_not_taken_for_one() -> None:
    for name in ("other:t:x:hist:1", "mt:t:", "mt:t:x:", "mt:t:x:hist", "mt:nothing:1", "mt"):
        assert keys.parse(name) is None, name
