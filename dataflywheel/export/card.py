"""The dataset card (``README.md``) of an export, rendered from its lineage.

Runs in: anywhere (pure). :class:`CardFacts` is what the database says about the exported
rows (run, round and its manifest, the dataset and its selection statistics, verifiers and
their versions, the generating checkpoints, evaluations); :func:`render_card` turns it into
Markdown with the YAML front matter the Hugging Face Hub reads: ``license: other`` (a run's
data has whatever license its prompts and model have, which the database does not know),
``tags: [dataflywheel]``, a size category and ``configs`` naming the data files, so
``load_dataset(<folder or repo>)`` finds them. The same facts always render the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

SPLIT = "train"
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"))
_SIZES += ((1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
_WHAT = {
    "dataset": "the rows of a selected dataset as they were trained on, each with the prompt, "
    "the sample it came from and that sample's scores",
    "samples": "every sample one round generated, one row per sample, with its prompt and "
    "every verifier's verdict",
    "evaluations": "every per-prompt result of the evaluations of a run's checkpoints",
}


@dataclass(frozen=True)
class CardFacts:
    """What the card says; the mappings are rows as ``dataflywheel.db.exports`` reads them."""

    kind: str  # dataset | samples | evaluations
    title: str
    data_files: tuple[str, ...]
    rows: int
    columns: Sequence[tuple[str, str, str]]
    run: Mapping[str, Any]
    version: str
    round: Mapping[str, Any] | None = None
    purposes: tuple[str, ...] = ()
    dataset: Mapping[str, Any] | None = None
    selections: Sequence[Mapping[str, Any]] = ()
    verifiers: Sequence[Mapping[str, Any]] = ()
    checkpoints: Sequence[Mapping[str, Any]] = ()
    trained_into: Sequence[Mapping[str, Any]] = ()
    evaluations: Sequence[Mapping[str, Any]] = ()
    hf_folder: bool = False


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for ``rows`` rows."""
    for bound, name in _SIZES:
        if rows < bound:
            return name
    return "n>100M"


def front_matter(facts: CardFacts) -> dict[str, Any]:
    files = list(facts.data_files)
    return {
        "license": "other",
        "pretty_name": facts.title,
        "tags": ["dataflywheel"],
        "size_categories": [size_category(facts.rows)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": SPLIT, "path": files[0] if len(files) == 1 else files}],
            }
        ],
    }


def render_card(facts: CardFacts) -> str:
    """The card's Markdown, front matter first."""
    head = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True)
    sections = [
        f"# {facts.title}",
        f"Exported by dataflywheel {facts.version} from its system of record: "
        f"{_WHAT[facts.kind]}. The lineage below is read from the same database snapshot "
        "as the rows.",
        _lineage(facts),
        *_selection(facts),
        _verifiers(facts),
        _checkpoints(facts),
        _trained_into(facts),
        _evaluations(facts),
        _columns(facts),
        _loading(facts),
        _spec(facts),
    ]
    return f"---\n{head}---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


# --------------------------------------------------------------------------- helpers


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    return "–" if value is None else f"`{value}`"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _yaml_block(value: Any) -> str:
    text = yaml.safe_dump(value, sort_keys=True, allow_unicode=True, default_flow_style=False)
    return f"```yaml\n{text}```"


def _details(summary: str, value: Any) -> str:
    return f"<details><summary>{summary}</summary>\n\n{_yaml_block(value)}\n\n</details>"


# --------------------------------------------------------------------------- sections


def _lineage(facts: CardFacts) -> str:
    run = facts.run
    rows: list[tuple[str, str]] = [
        ("run", f"#{run['id']} `{run['name']}` ({run['status']})"),
        ("spec hash", _code(run["spec_hash"])),
    ]
    if run.get("replay_of_round_id") is not None:
        rows.append(("replay of round", f"#{run['replay_of_round_id']}"))
    rnd = facts.round
    if rnd is not None:
        rows.append(("round", f"{rnd['index']} ({rnd['status']}, seed {rnd['seed']})"))
        rows.append(("round manifest digest", _code(rnd.get("manifest_digest"))))
        code = (rnd.get("manifest") or {}).get("code") or {}
        if code:
            rows.append(
                (
                    "code",
                    f"dataflywheel {code.get('dataflywheel')}, git {_code(code.get('git_commit'))}",
                )
            )
    if facts.purposes:
        rows.append(("purposes", ", ".join(facts.purposes)))
    ds = facts.dataset
    if ds is not None:
        rows.append(("dataset", f"#{ds['id']} `{ds['name']}` ({ds['kind']})"))
        rows.append(("dataset file digest", _code(ds["digest"])))
        rows.append(("rows in the dataset", str(ds["row_count"])))
    rows.append(("rows in this export", str(facts.rows)))
    rows.append(("data files", ", ".join(f"`{f}`" for f in facts.data_files)))
    out = "## Lineage\n\n" + _table(("", ""), rows)
    manifest = (rnd or {}).get("manifest")
    if manifest:
        out += "\n\n" + _details("The round's manifest (seeds, versions, digests)", manifest)
    return out


def _selection(facts: CardFacts) -> list[str]:
    if facts.dataset is not None:
        return [_one_selection("## Selection", facts.dataset)]
    if facts.kind == "samples":
        if not facts.selections:
            return ["## Selection\n\nThe round recorded no dataset."]
        return ["## Selection"] + [
            _one_selection(f"### Dataset #{d['id']} `{d['name']}` ({d['kind']})", d)
            for d in facts.selections
        ]
    return []


def _one_selection(title: str, dataset: Mapping[str, Any]) -> str:
    stats = dataset.get("stats") or {}
    parts = [title]
    recipe = dataset.get("recipe") or stats.get("recipe")
    summary = f"Recipe {_code(recipe)}"
    if "seen" in stats:
        summary += f": {stats['seen']} candidates seen, {stats.get('kept')} kept"
        if stats.get("yield") is not None:
            summary += f" (yield {_cell(stats['yield'])})"
    if stats.get("recipe_kept") is not None:
        summary += f"; the recipe kept {stats['recipe_kept']} before the filters"
    parts.append(summary + ".")
    if stats.get("counts"):
        parts.append(_table(("outcome", "count"), sorted(stats["counts"].items())))
    filters = stats.get("filters")
    if filters:
        parts.append(
            "Filters, in the order they ran:\n\n"
            + _table(
                ("filter", "rows in", "rows out", "yield", "removed"),
                [
                    (
                        f.get("filter"),
                        f.get("in"),
                        f.get("out"),
                        f.get("yield"),
                        ", ".join(f"{k}: {v}" for k, v in sorted((f.get("removed") or {}).items())),
                    )
                    for f in filters
                ],
            )
        )
        ran = any(f.get("filter") == "decontaminate" for f in filters)
        removed = stats.get("contaminated", 0)
        parts.append(
            f"Decontamination against the run's eval prompts removed {removed} rows."
            if ran
            else "No decontamination filter ran in this selection."
        )
    else:
        parts.append("The selection recorded no filters (no dedup or decontamination ran).")
    diversity = stats.get("diversity")
    if diversity:
        parts.append(
            "Diversity of what was kept: "
            + ", ".join(f"{k} {_cell(v)}" for k, v in sorted(diversity.items()))
            + "."
        )
    if dataset.get("recipe_config"):
        parts.append("Recipe configuration:\n\n" + _yaml_block(dataset["recipe_config"]))
    if stats:
        parts.append(_details("Selection statistics as recorded (datasets.stats)", stats))
    return "\n\n".join(parts)


def _verifiers(facts: CardFacts) -> str:
    manifest = ((facts.round or {}).get("manifest") or {}).get("verifiers") or {}
    if not facts.verifiers and not manifest:
        return ""
    out = "## Verifiers\n\n"
    if facts.verifiers:
        out += "Verdicts on the exported samples, per verifier and version:\n\n" + _table(
            ("verifier", "version", "verdicts", "passed", "unscorable"),
            [
                (
                    v["verifier"],
                    f"`{v['verifier_version']}`",
                    v["verdicts"],
                    v["passed"],
                    v["unscorable"],
                )
                for v in facts.verifiers
            ],
        )
    else:
        out += "No verdicts on the exported samples."
    if manifest:
        out += "\n\nVersions in the round's manifest: " + ", ".join(
            f"{name} `{version}`" for name, version in sorted(manifest.items())
        )
    return out


def _checkpoints(facts: CardFacts) -> str:
    if not facts.checkpoints:
        return ""
    return "## Generating checkpoints\n\n" + _table(
        ("checkpoint", "digest", "peer", "trained in round", "status", "source", "samples"),
        [
            (
                f"#{c['id']}",
                _code(c["digest"]),
                c["peer"],
                "base" if c["trained_in_round"] is None else c["trained_in_round"],
                c["status"],
                c.get("source_uri"),
                c["samples"],
            )
            for c in facts.checkpoints
        ],
    )


def _trained_into(facts: CardFacts) -> str:
    if facts.dataset is None:
        return ""
    if not facts.trained_into:
        return "## Trained into\n\nNo checkpoint records training on this dataset."
    return "## Trained into\n\n" + _table(
        ("checkpoint", "digest", "round", "status", "share of the mix"),
        [
            (f"#{c['id']}", _code(c["digest"]), c["round_index"], c["status"], c["share"])
            for c in facts.trained_into
        ],
    )


def _evaluations(facts: CardFacts) -> str:
    if facts.kind != "evaluations":
        return ""
    if not facts.evaluations:
        return "## Evaluations\n\nThe run has no evaluations yet."
    return "## Evaluations\n\n" + _table(
        ("evaluation", "eval set", "checkpoint", "digest", "trained in round", "status",
         "round", "primary metric", "value", "prompt results"),
        [
            (
                f"#{e['id']}",
                e["eval_set"],
                f"#{e['checkpoint_id']}",
                _code(e["digest"]),
                "base" if e["trained_in_round"] is None else e["trained_in_round"],
                e["status"],
                e["round_index"],
                e["primary_metric"],
                e["primary_value"],
                e["results"],
            )
            for e in facts.evaluations
        ],
    )  # fmt: skip


def _columns(facts: CardFacts) -> str:
    return (
        "## Columns\n\n"
        + _table(
            ("column", "type", "description"),
            [(f"`{n}`", f"`{t}`", d) for n, t, d in facts.columns],
        )
        + "\n\nScores are a list of structs, one per verdict; one column per verifier is a "
        "one-liner, e.g. `ds.map(lambda r: {v['verifier']: v['value'] for v in r['scores']})`. "
        "JSON columns hold text: `json.loads` them."
    )


def _loading(facts: CardFacts) -> str:
    files = ", ".join(f'"{f}"' for f in facts.data_files)
    code = [
        "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files=[{files}])["{SPLIT}"]',
    ]
    if facts.hf_folder:
        code += [
            "",
            "from datasets import load_from_disk",
            'ds = load_from_disk(".")  # this folder',
        ]
    else:
        code += [
            "",
            "import pyarrow.parquet as pq",
            f"table = pq.read_table({files.split(', ')[0]})",
        ]
    return "## Loading\n\n```python\n" + "\n".join(code) + "\n```"


def _spec(facts: CardFacts) -> str:
    spec = facts.run.get("spec")
    if not spec:
        return ""
    return "## Run spec\n\nThe run's configuration exactly as validated:\n\n" + _yaml_block(spec)
