"""The kinds of parts a recipe plugs in, the slots that take each kind, and the one-line message for
a part of the wrong kind.

Every pluggable slot of lebm's classes takes one kind of part: ``sampler`` (and ``posterior_sampler``,
``data_sampler``, ``test_data_sampler``) a sampler, ``prior`` a prior, ``decoder`` a decoder,
``encoder`` an inference network, ``energy_net``/``ratio_net`` an energy net, a decoder's ``net`` a
generator net; at the top, ``model`` a method and ``data`` a data module. A part of another kind
shows in one of two ways, and both end in the same message (:func:`wrong_kind`), which names the
key, the class given and its kind, and the kind the slot takes with lebm's classes of that kind,
nearest name first::

    model.init_args.prior.init_args.sampler takes a sampler, got lebm.nets.EnergyMLP, an energy net:
    use lebm.samplers.Langevin, lebm.samplers.HMC, ... (or a lebm.samplers.Sampler of your own)

- the parser refuses it (it is not a subclass of the slot's type: a net where a sampler belongs):
  :func:`lebm.cli.errors.summarize_parser_error` finds the key, the class and the type in the
  parser's nested message and words it with :func:`wrong_kind`;
- the parser accepts it, both being ``nn.Module`` (an energy net where a decoder or a generator
  belongs), or refuses it for a reason of its own (the energy net's ``in_dim`` is missing):
  :func:`check_kinds` walks the parsed config before anything is built, and the parser's message
  is checked for it first.

Only lebm's own classes are judged by slot name (a class of the user's passes wherever its type
fits); a slot of a user's class is judged by its type alone.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One kind of part.

    Attributes:
        name: what the messages call it (``"sampler"``, ``"energy net"``).
        base: the class every part of this kind subclasses, as a class path (None: no common base
            beyond ``torch.nn.Module``).
        members: lebm's classes of this kind, as recipes write their class paths.
    """

    name: str
    base: str | None
    members: tuple[str, ...]

    @property
    def a(self) -> str:
        """The name with its article: ``a sampler``, ``an energy net``."""
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}"


#: Every kind of pluggable part, with lebm's classes of each (tests/cli/test_component_kinds.py checks
#: that every public class of lebm.nets, lebm.samplers and lebm.models is listed or a base).
KINDS = {
    kind.name: kind
    for kind in (
        Kind(
            "method",
            "lebm.models.Method",
            (
                "lebm.models.LatentEBM",
                "lebm.models.MultiStageNCE",
                "lebm.models.DualMCMC",
                "lebm.models.JointHierarchicalEBM",
                "lebm.models.DAMC",
            ),
        ),
        Kind(
            "data module",
            "lightning.pytorch.LightningDataModule",
            (
                "lebm.data.ImageDataModule",
                "lebm.data.TextDataModule",
                "lebm.data.MNISTAnomalyDataModule",
                "lebm.data.OutOfDistributionDataModule",
                "lebm.data.MixtureDataModule",
                "lebm.data.SampleRequests",
            ),
        ),
        Kind(
            "sampler",
            "lebm.samplers.Sampler",
            ("lebm.samplers.Langevin", "lebm.samplers.MALA", "lebm.samplers.HMC", "lebm.samplers.PersistentChains"),
        ),
        Kind(
            "prior",
            "lebm.models.Prior",
            ("lebm.models.GaussianPrior", "lebm.models.TiltedGaussianPrior", "lebm.models.ProductOfRatiosPrior"),
        ),
        Kind("decoder", "lebm.nets.Decoder", ("lebm.nets.GaussianDecoder", "lebm.nets.CategoricalDecoder")),
        Kind(
            "encoder",
            "lebm.nets.InferenceNetwork",
            (
                "lebm.nets.ConvEncoder",
                "lebm.nets.MLPEncoder",
                "lebm.nets.LadderEncoder",
                "lebm.nets.VLAELadderEncoder",
                "lebm.nets.BiLSTMEncoder",
            ),
        ),
        Kind("energy net", None, ("lebm.nets.EnergyMLP", "lebm.nets.SNResNetEnergy")),
        Kind(
            "learned chain initializer",
            "lebm.samplers.ChainInitializer",
            ("lebm.nets.LatentDiffusionAmortizer", "lebm.samplers.AveragedStart"),
        ),
        Kind("embedding net", None, ("lebm.nets.ConvEmbedding", "lebm.nets.MLPEmbedding")),
        Kind(
            "generator net",
            None,
            (
                "lebm.nets.MLPGenerator",
                "lebm.nets.DCGANGenerator",
                "lebm.nets.SNGANGenerator",
                "lebm.nets.HierarchicalGenerator",
                "lebm.nets.VLAEGenerator",
                "lebm.nets.LSTMTextGenerator",
            ),
        ),
    )
}

#: The slots of lebm's classes (their argument names; ``model`` and ``data`` at the top) and the kind
#: each takes.
SLOTS = {
    "model": "method",
    "data": "data module",
    "sampler": "sampler",
    "posterior_sampler": "sampler",
    "data_sampler": "sampler",
    "test_data_sampler": "sampler",
    "prior": "prior",
    "decoder": "decoder",
    "encoder": "encoder",
    "energy_net": "energy net",
    "ratio_net": "energy net",
    "net": "generator net",
    "amortizer": "learned chain initializer",
}
#: Slots whose kind depends on their owner as well: ``{(owner's class path, slot): kind}`` (the
#: amortizer's ``encoder`` embeds observations for its condition; it is not an inference network).
OWNER_SLOTS = {("lebm.nets.LatentDiffusionAmortizer", "encoder"): "embedding net"}
#: How many of a kind's classes a message lists.
LISTED = 6


def load_class(class_path: str) -> type | None:
    """The class at ``class_path``, or None when it cannot be imported or is not a class."""
    module_name, _, name = class_path.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), name)
    except Exception:
        return None
    return value if isinstance(value, type) else None


def kind_of(class_path: str) -> Kind | None:
    """The kind of the class at ``class_path``: lebm's listed classes by name (or by identity, under
    another path), any other class by the base it subclasses; None for a class of no known kind (a
    user's plain ``nn.Module``)."""
    for kind in KINDS.values():
        if class_path in kind.members:
            return kind
    cls = load_class(class_path)
    if cls is None:
        return None
    for kind in KINDS.values():
        if any(cls is load_class(member) for member in kind.members):
            return kind
    for kind in KINDS.values():
        base = load_class(kind.base) if kind.base else None
        if base is not None and issubclass(cls, base):
            return kind
    return None


def slot_kind(slot: str, owner: str | None, type_name: str | None = None) -> Kind | None:
    """The kind the slot ``slot`` of the class ``owner`` takes (``owner`` None: the top of the config):
    by the slot's name for lebm's classes and the top; else by its type's name (``type_name``, as the
    parser's message gives it) when that is a kind's base; None when not known."""
    if (owner, slot) in OWNER_SLOTS:
        return KINDS[OWNER_SLOTS[(owner, slot)]]
    if (owner is None or owner.startswith("lebm.")) and slot in SLOTS:
        return KINDS[SLOTS[slot]]
    for kind in KINDS.values():
        if kind.base and type_name and kind.base.rsplit(".", 1)[-1] == type_name:
            return kind
    return None


def _subclass_names(class_path: str) -> list[str]:
    cls = load_class(class_path)
    return [parent.__name__ for parent in cls.__mro__] if cls is not None else []


def nearest(given: str, kind: Kind, type_name: str | None = None) -> list[str]:
    """The kind's classes that fit a slot typed ``type_name`` (all of them for ``Module`` or no type),
    nearest to ``given``'s class name first."""
    members = [
        member
        for member in kind.members
        if type_name in (None, "Module") or type_name in _subclass_names(member) or not _subclass_names(member)
    ]
    short = given.rsplit(".", 1)[-1].lower()

    def closeness(member: str) -> float:
        return difflib.SequenceMatcher(None, short, member.rsplit(".", 1)[-1].lower()).ratio()

    return sorted(members, key=closeness, reverse=True)


def describe(class_path: str) -> str:
    """What the class at ``class_path`` is, for a message: its kind (``an energy net``), ``a
    torch.nn.Module of no known kind``, ``a class of no known kind`` or ``not a class``."""
    kind = kind_of(class_path)
    if kind is not None:
        return kind.a
    cls = load_class(class_path)
    if cls is None:
        return "not a class"
    if any(f"{parent.__module__}.{parent.__name__}" == "torch.nn.modules.module.Module" for parent in cls.__mro__):
        return "a torch.nn.Module of no known kind"
    return "a class of no known kind"


def wrong_kind(key: str, given: str, kind: Kind | None, type_name: str | None = None) -> str:
    """The message for the class ``given`` at ``key``, whose slot takes ``kind`` (typed ``type_name``
    in the slot's signature, when known): the key, the class and what it is, the kind the slot takes
    and lebm's classes of that kind, nearest first."""
    if kind is None:
        return f"{key} takes a {type_name or 'part of another kind'}, got {given}, {describe(given)}"
    base_name = kind.base.rsplit(".", 1)[-1] if kind.base else None
    typed = type_name if type_name not in (None, "Module", base_name) else None  # a narrower type
    listed = nearest(given, kind, typed)
    names = ", ".join(listed[:LISTED]) + (", ..." if len(listed) > LISTED else "")
    what = f"{kind.a} of type {typed}" if typed else kind.a
    own = f"a subclass of {typed}" if typed else f"a {kind.base}" if kind.base else "a torch.nn.Module"
    use = f"{names} (or {own} of your own)" if names else own
    return f"{key} takes {what}, got {given}, {describe(given)}: use {use}"


def mismatch(key: str, given: str, slot: str, owner: str | None) -> str | None:
    """The message when the class ``given`` at ``key`` (the slot ``slot`` of the class ``owner``,
    None at the top) is one of lebm's parts of another kind than the slot takes, else None (a
    class of no known kind, or one of the user's, is left to the slot's type)."""
    expected = slot_kind(slot, owner)
    if expected is None or (owner is not None and not owner.startswith("lebm.")):
        return None
    found = kind_of(given)
    if found is None or found == expected:
        return None
    base = load_class(expected.base) if expected.base else None
    cls = load_class(given)
    if base is not None and cls is not None and issubclass(cls, base):
        return None
    return wrong_kind(key, given, expected)


def parts(node: Any, key: str, slot: str, owner: str | None = None) -> Iterator[tuple[str, str, str, str | None]]:
    """``(key, class_path, slot, owner)`` for every part (a mapping with a ``class_path``) in ``node``,
    the config at ``key`` (the slot ``slot`` of ``owner``), outermost first; list items share their
    list's key."""
    if isinstance(node, Mapping) and isinstance(node.get("class_path"), str):
        class_path = node["class_path"]
        yield key, class_path, slot, owner
        arguments = node.get("init_args")
        for name, value in arguments.items() if isinstance(arguments, Mapping) else ():
            yield from parts(value, f"{key}.init_args.{name}", str(name), class_path)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from parts(item, key, slot, owner)


def check_kinds(config: Mapping[str, Any]) -> str | None:
    """The message for the first part of the wrong kind in a parsed config (plain data: its
    ``model`` and ``data`` sections), or None when every part is of its slot's kind."""
    for section in ("model", "data"):
        for key, class_path, slot, owner in parts(config.get(section), section, section):
            message = mismatch(key, class_path, slot, owner)
            if message:
                return message
    return None
