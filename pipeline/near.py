"""Near-dedup in a run: which paths under the run directory each step of the near-dedup stage
(slimpipe.stages.near_dedup: LSH, verification, components, survivors) reads and writes, which
steps are done, the figures each records in run.json, and the checks made before Ray starts.

Each step is recorded in run.json when complete, so a killed run resumes at the first unfinished
step. Earlier runs named in `dedup.near.against` join with their stored signatures (nothing is
recomputed); their documents take part in buckets and clusters but are never removed.
"""

from __future__ import annotations

import time

from slimpipe.errors import ConfigError
from slimpipe.io.fs import exists, join, read_json, write_json_atomic
from slimpipe.rundir import (
    NEAR_COMPONENTS,
    NEAR_DUPSETS,
    NEAR_EDGES,
    NEAR_MEMBERS,
    NEAR_PARTS,
    NEAR_PREFIX,
    NEAR_ROUNDS,
    NEAR_UNIQUE,
    NEAR_VERIFIED,
    RunDir,
)
from slimpipe.stages.minhash import MinHashParams
from slimpipe.stages.near_dedup import (
    SurvivorOutputs,
    find_candidate_edges,
    find_components,
    verify_edges,
    write_survivors,
)
from slimpipe.stages.near_dedup.lsh import resolve_bands
from slimpipe.stages.shuffle import Shuffle

STEPS = ("lsh", "verify", "components", "survivors")


def _run_parts(rd: RunDir, chunks) -> list[dict]:
    return [
        {
            "path": path,
            "chunk": chunk,
            "work": rd.uri_of("_work"),
            "removed": rd.removed_lines_uris(),
            "reference": False,
        }
        for chunk, path, _ in rd.in_input_order(rd.kept_parts(), chunks)
    ]


def reference_parts(against: list[str], near: dict) -> list[dict]:
    """The parts of earlier runs, whose signatures must have been made the same way."""
    mine = MinHashParams.from_config(near)
    out = []
    for uri in against:
        ref = RunDir(uri)
        if not exists(ref.fs, join(ref.path, "run.json")):
            raise ConfigError(f"dedup.near.against: {uri} is not a slimpipe run directory")
        state = read_json(ref.fs, join(ref.path, "run.json"))
        if state.get("status") != "done":
            raise ConfigError(f"dedup.near.against: {uri} has not finished")
        ref_near = state["config"]["dedup"].get("near", {})
        if not ref_near.get("enabled") or MinHashParams.from_config(ref_near) != mine:
            raise ConfigError(
                f"dedup.near.against: {uri} has no signatures made with these MinHash "
                "settings (shingle, ngram, num_perm, seed, hash, scheme, short_docs)"
            )
        chunks = ref.load_plan() or []
        out += [
            {
                "path": path,
                "chunk": chunk,
                "work": ref.uri_of("_work"),
                "removed": ref.removed_lines_uris(),
                "reference": True,
            }
            for chunk, path, _ in ref.in_input_order(ref.kept_parts(), chunks)
        ]
    return out


def banding_of(near: dict) -> dict:
    """The run's banding; a banding the settings cannot give is a config error (checked before Ray)."""
    try:
        return resolve_bands(near)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _lsh(rd: RunDir, parts: list[dict], banding: dict, shuffle: Shuffle) -> dict:
    docs = sum(p.rows for p in rd.kept_parts().values())
    return find_candidate_edges(parts, banding, docs, shuffle, rd.uri_of(*NEAR_EDGES))


def _verify(rd: RunDir, parts: list[dict], near: dict, candidates: int, shuffle: Shuffle) -> dict:
    threshold = near["verify_threshold"] if near["verify_threshold"] is not None else near["threshold"]
    kept = rd.kept_parts().values()
    text_bytes = sum(p.text_bytes for p in kept) // max(1, sum(p.rows for p in kept))
    return {
        "threshold": threshold,
        **verify_edges(
            parts,
            MinHashParams.from_config(near),
            threshold,
            candidates,
            text_bytes,
            shuffle,
            rd.uri_of(*NEAR_EDGES),
            rd.uri_of(*NEAR_UNIQUE),
            rd.uri_of(*NEAR_VERIFIED),
        ),
    }


def _survivors(rd: RunDir, parts: list[dict], near: dict, nodes: int, shuffle: Shuffle, level: int) -> dict:
    rd.clear_near_outputs()
    out = SurvivorOutputs(
        duplicates=rd.uri_of("duplicates"),
        clusters=rd.uri_of("clusters"),
        prefix=NEAR_PREFIX,
        removed_lines=rd.uri_of(*NEAR_DUPSETS),
        members=rd.uri_of(*NEAR_MEMBERS),
    )
    return write_survivors(
        parts, rd.uri_of(*NEAR_COMPONENTS), nodes, near["survivor"], near["source_priority"], shuffle, out, level
    )


def stage_near_dedup(rd: RunDir, chunks, config: dict, shuffle: Shuffle) -> None:
    near = config["dedup"]["near"]
    info = rd.state["stages"].get("near_dedup", {})
    if not near["enabled"] or info.get("status") == "done":
        rd.set_stage("near_dedup", status="done")
        return
    banding = banding_of(near)
    parts_path = join(rd.path, *NEAR_PARTS)
    if not exists(rd.fs, parts_path):  # fixed at the first attempt: node numbers depend on it
        write_json_atomic(rd.fs, parts_path, {"parts": _run_parts(rd, chunks) + reference_parts(near["against"], near)})
    parts = read_json(rd.fs, parts_path)["parts"]
    done = set(info.get("steps_done", []))
    rd.set_stage("near_dedup", banding=banding, parts=len(parts))

    def step(name: str, run, *clear) -> None:
        if name in done:
            return
        if clear:
            rd.clear(*clear)
        t = time.time()
        figures = {**run(), "seconds": round(time.time() - t, 2)}
        done.add(name)
        rd.set_stage("near_dedup", steps_done=[s for s in STEPS if s in done], **{name: figures})

    step("lsh", lambda: _lsh(rd, parts, banding, shuffle), *NEAR_EDGES)
    candidates = rd.state["stages"]["near_dedup"]["lsh"]["candidate_edges"]
    if near["verify"]:
        step("verify", lambda: _verify(rd, parts, near, candidates, shuffle), *NEAR_VERIFIED)
    edges_uri = rd.uri_of(*(NEAR_VERIFIED if near["verify"] else NEAR_EDGES))
    edges = rd.state["stages"]["near_dedup"]["verify"]["verified"] if near["verify"] else candidates
    step(
        "components",
        lambda: find_components(
            edges_uri,
            edges,
            rd.uri_of(*NEAR_COMPONENTS),
            near["components_task_edges"],
            rd.uri_of(*NEAR_ROUNDS),
            shuffle,
        ),
        *NEAR_COMPONENTS,
    )
    nodes = rd.state["stages"]["near_dedup"]["components"]["nodes"]
    step("survivors", lambda: _survivors(rd, parts, near, nodes, shuffle, config["output"]["compression_level"]))
    rd.set_stage("near_dedup", status="done")
