"""The figures of the status table's words, read from the records: a status row's ``reason``, its
``data`` and its selectors' ``label`` (``docs/results/status/status.json``) hold no figure typed by
hand, only ``{name}`` placeholders, each defined in the row's ``figures`` by where its values come
from. ``tests/test_results_figures.py`` fails on a numeral typed into those words (a setting's name,
:data:`NAMES`, aside), on a placeholder no figure defines and on a figure no text uses.

A figure (``{"of": where, "read": path, "show": how}``) reads ``path`` in every record the selector
``where`` picks (``results_status.selected``: sorted by the order its lists give, then by digit):

- ``of`` the result records; ``published`` the papers' (``docs/results/published/*.json``);
  ``recipe`` a recipe's name, its composed YAML (includes merged) read at ``path``; ``size`` a
  recipe's name, its parameter count (``docs/results/status/sizes.json``);
- ``path``: keys joined by dots; ``readings@N`` is the checkpoint reading of update ``N``,
  ``readings@last`` the last one (``readings@last.update``: how long the run trained);
- ``minus``: a second path of the same record, subtracted (a seed's rise between two checkpoints);
- ``pair``: ``{"of", "read"}`` of other records, subtracted one by one in the selectors' order (a
  change at the same seed: where both have seeds, they must be the same, in order);
- ``match``: a regular expression whose first group is taken from a text value ("6" of "6 epochs");
- ``per``: a field (``digit``): the values shown group by group, " / " between;
- ``sum``: ``{name: coefficient}``, a sum of other figures' means (one part of a gap).

``show``: ``mean_sd`` (mean ± sample sd), ``mean``, ``signed`` (the mean with its sign), ``range``
(lowest-highest), ``each`` (every value, " / " between), ``one`` (the value every record shares; an
error when they differ), ``percent`` (each value x 100, one decimal, " / " between), ``one_percent``
(the value every record shares, x 100), ``millions``
(``0.82M``) or ``text`` (a text value as it is); ``digits`` the decimals (3 unless said; a whole
number of the records, an update or a count, is shown whole, with thousands separated).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from results_records import number
from results_status import selected

PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: Numerals the words may hold: the names of settings, digits, pools, devices and tables, not
#: measurements (a figure of a record is a placeholder).
NAMES = re.compile(
    r"held-out (?:\d(?:, | / | and |/))*\d|\bseed \d\b|ngf \d+|sigma \d\.\d|Table \d|H[12]00|L=10|CIFAR-10|"
    r"\b\d+(?:\.\d)?k\b|[\w/]+\.yaml|layers? \d(?: and \d)?|\b1 / 4 / 5 / 7 / 9\b|\+ \d+ Langevin steps",
    re.IGNORECASE,
)
NUMERAL = re.compile(r"\d")


@dataclass
class Sources:
    """What figures are read from."""

    records: list[dict]
    published: list[dict] = field(default_factory=list)
    sizes: dict[str, dict] = field(default_factory=dict)
    recipes: Path = Path(__file__).resolve().parents[1] / "recipes"


def read(value: object, path: str) -> object:
    """``path`` (keys joined by dots, ``readings@N`` / ``readings@last``) in ``value``."""
    for key in path.split("."):
        name, _, update = key.partition("@")
        if not isinstance(value, dict) or name not in value:
            raise KeyError(f"no {name!r} on the way to {path!r}")
        value = value[name]
        if update:
            readings = sorted(value, key=lambda r: r["update"])
            found = readings[-1:] if update == "last" else [r for r in readings if r["update"] == int(update)]
            if not found:
                raise KeyError(f"no reading of update {update} on the way to {path!r}")
            value = found[0]
    return value


def recipe_data(name: str, recipes: Path) -> dict:
    """A recipe's YAML with the files it includes merged beneath it (the recipe's own values win)."""

    def merged(low: dict, high: dict) -> dict:
        out = dict(low)
        for key, value in high.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    def load(path: Path) -> dict:
        data = yaml.safe_load(path.read_text()) or {}
        base: dict = {}
        for include in data.pop("include", None) or []:
            base = merged(base, load(path.parent / include))
        return merged(base, data)

    return load(recipes / f"{name}.yaml")


def values_of(spec: dict, sources: Sources, known: dict[str, list]) -> list:
    """A figure's values, before they are shown."""
    if "sum" in spec:
        return [sum(coefficient * statistics.mean(known[name]) for name, coefficient in spec["sum"].items())]
    if "recipe" in spec:
        return [read(recipe_data(spec["recipe"], sources.recipes), spec["read"])]
    if "size" in spec:
        return [sources.sizes[spec["size"]]["parameters"]]
    pool = sources.published if "published" in spec else sources.records
    picked = selected({"where": spec.get("published", spec.get("of"))}, pool)
    values = [read(record, spec["read"]) for record in picked]
    if "minus" in spec:
        values = [value - read(record, spec["minus"]) for value, record in zip(values, picked, strict=True)]
    if "pair" in spec:
        others = selected({"where": spec["pair"]["of"]}, pool)
        if len(others) != len(picked) or [r.get("seed") for r in others] != [r.get("seed") for r in picked]:
            raise ValueError(f"the paired records are not the same seeds, in order ({len(picked)} and {len(others)})")
        values = [value - read(other, spec["pair"]["read"]) for value, other in zip(values, others, strict=True)]
    if "per" in spec:
        spec["_groups"] = [record.get(spec["per"]) for record in picked]
    if "match" in spec:
        found = [re.search(spec["match"], str(value)) for value in values]
        if not all(found):
            raise ValueError(f"{spec['match']!r} does not match every value of {values}")
        values = [m.group(1) for m in found]
    return values


def shown(values: list, spec: dict) -> str:
    """A figure's values as the words show them."""
    how, digits = spec.get("show", "one"), spec.get("digits", 3)
    if not values:
        raise ValueError("a figure with no value")
    if how == "text":
        return " / ".join(str(v) for v in values)
    numbers = [float(str(v).replace(",", "")) if isinstance(v, str) else float(v) for v in values]
    whole = all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values)

    def one(v: float) -> str:
        if whole and v.is_integer() and spec.get("digits") is None:
            return f"{int(v):,}"
        return f"{v:.{digits}f}" if spec.get("digits") is not None else number(v)

    mean = statistics.mean(numbers)
    if how == "one":
        if len(set(numbers)) != 1:
            raise ValueError(f"the records differ ({numbers}): show them otherwise than 'one'")
        return one(numbers[0])
    if how == "mean":
        return one(mean)
    if how == "signed":
        return f"{mean:+.{digits}f}"
    if how == "mean_sd":
        if len(numbers) < 2:
            raise ValueError("a sample sd needs two values")
        return f"{one(mean)} ± {one(statistics.stdev(numbers))}"
    if how == "range":
        return f"{min(numbers):.{digits}f}-{max(numbers):.{digits}f}"
    if how == "each":
        return " / ".join(one(v) for v in numbers)
    if how == "one_percent":
        if len(set(numbers)) != 1:
            raise ValueError(f"the records differ ({numbers}): show them otherwise than 'one_percent'")
        return f"{100 * numbers[0]:.{spec.get('digits', 1)}f}"
    if how == "percent":
        return " / ".join(f"{100 * v:.{spec.get('digits', 1)}f}" for v in numbers)
    if how == "millions":
        return f"{mean / 1e6:.{spec.get('digits', 2)}f}M"
    raise ValueError(f"show {how!r} is none of mean_sd, mean, signed, range, each, one, percent, millions, text")


def shown_per(values: list, spec: dict, groups: list) -> str:
    """``shown`` of each group's values (``per``: a field such as ``digit``), in order, " / " between."""
    order = list(dict.fromkeys(groups))
    return " / ".join(shown([v for v, g in zip(values, groups, strict=True) if g == group], spec) for group in order)


def figures(specs: dict[str, dict], sources: Sources) -> dict[str, str]:
    """Every figure of a row, shown, by name (a ``sum`` reads the figures named before it)."""
    known: dict[str, list] = {}
    texts = {}
    for name, given in specs.items():
        spec = dict(given)
        try:
            known[name] = values_of(spec, sources, known)
            groups = spec.pop("_groups", None)
            texts[name] = shown(known[name], spec) if groups is None else shown_per(known[name], spec, groups)
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"figure {name!r} ({spec}): {error}") from None
    return texts


def fill(text: str, texts: dict[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by its figure; an undefined one is an error."""
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(texts))
    if unknown:
        raise ValueError(f"no figure defines {unknown} (the row's 'figures')")
    return PLACEHOLDER.sub(lambda m: texts[m.group(1)], text)


def words(row: dict) -> list[str]:
    """A status row's words that may hold figures: its reason, its data and its selectors' labels."""
    return [row.get("reason", ""), row.get("data", ""), *(s.get("label", "") for s in row.get("ours") or [])]


def typed_figures(text: str) -> list[str]:
    """The numerals typed into ``text`` (its placeholders and the names of :data:`NAMES` aside)."""
    rest = NAMES.sub(" ", PLACEHOLDER.sub(" ", text))
    return re.findall(r"[-+]?[\d][\d,.]*(?:\s*%)?", rest) if NUMERAL.search(rest) else []


def filled_row(row: dict, sources: Sources) -> dict:
    """A status row with its figures in its words."""
    texts = figures(row.get("figures") or {}, sources)
    out = {**row, "reason": fill(row.get("reason", ""), texts)}
    if "data" in row:
        out["data"] = fill(row["data"], texts)
    if row.get("ours"):
        out["ours"] = [{**s, "label": fill(s["label"], texts)} if "label" in s else s for s in row["ours"]]
    return out


def problems(row: dict) -> list[str]:
    """What is wrong with a status row's words: a numeral typed by hand, a placeholder no figure
    defines, a figure no word uses."""
    specs = row.get("figures") or {}
    used = {name for text in words(row) for name in PLACEHOLDER.findall(text)}
    found = [f"a figure typed by hand: {figure!r}" for text in words(row) for figure in typed_figures(text)]
    found += [f"no figure defines {{{name}}}" for name in sorted(used - set(specs))]
    found += [f"figure {name!r} is used by no word" for name in specs if name not in used]
    summed = {name for spec in specs.values() for name in spec.get("sum", {})}
    return [p for p in found if not any(p == f"figure {name!r} is used by no word" for name in summed)]
