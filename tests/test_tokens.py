"""Tokens for training, end to end on Ray: train a tokenizer on a finished run, tokenize it,
export Megatron and packed Arrow shards, read them back with their own readers, and feed a
training loop that resumes."""

import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl

from slimpipe.cli import main as cli_main
from slimpipe.config import resolve
from slimpipe.errors import RunConflict
from slimpipe.export import export
from slimpipe.runner import run
from slimpipe.stages.export import megatron_dtype
from slimpipe.stages.tokenize import Encoder, TokenizerError, token_type
from slimpipe.tokens import tokenize, train_tokenizer

torch = pytest.importorskip("torch")

CODE = "def f(x):\n    if x:\n\t\treturn  x * 2   # two spaces, then three\n\n\n    return None\n"
ODD = "Grüße, 東京 🦜 — naïve café\r\nline two\u00a0with nbsp"


def _stream(path):
    with open(path, "rb") as f:
        return pa.ipc.open_stream(f).read_all()


@pytest.fixture(scope="module")
def tokens_run(ray_session, c4_docs, tmp_path_factory):
    """A finished run with a holdout and two sources, its tokenizer and its tokens."""
    root = tmp_path_factory.mktemp("tokens")
    docs = [dict(d, id=f"c4-{i}") for i, d in enumerate(c4_docs[:240])]
    write_jsonl(root / "in" / "web" / "a.jsonl", docs[:160])
    write_jsonl(root / "in" / "news" / "b.jsonl", docs[160:] + [{"id": "code-1", "text": CODE * 40}])
    config = resolve(
        "slimpajama",
        None,
        ["split.holdout_ratio=0.2", "ray.progress_bars=false"],
        [str(root / "in")],
        str(root / "run"),
    )
    run(config)
    run_dir = str(root / "run")
    info = train_tokenizer(run_dir, ["tokenizer.vocab_size=1200", "tokenizer.user_symbols=[<|code|>]"])
    stats = tokenize(run_dir, overrides=["tokenize.unit_bytes=100000"])
    return {"dir": root / "run", "info": info, "stats": stats}


def _model(tokens_run):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(tokens_run["dir"] / "tokenizer" / "tokenizer.model"))


def test_round_trip_keeps_newlines_spaces_and_unseen_characters(tokens_run, c4_docs):
    sp = _model(tokens_run)
    info = json.loads((tokens_run["dir"] / "tokenizer" / "tokenizer.json").read_text())
    assert info["sha256"] == tokens_run["info"]["sha256"] and info["vocab_size"] == 1200
    assert info["sample"]["documents"] > 100
    for text in [CODE, ODD, "  leading and trailing  ", "a\n\n\n\nb", *[d["text"] for d in c4_docs[300:340]]]:
        assert sp.decode(sp.encode(text)) == text
    assert "\n" in "".join(sp.encode(CODE, out_type=str))  # newlines are tokens, not dropped
    assert sp.encode("<|code|>", out_type=str) == ["<|code|>"]  # a user symbol stays whole
    # a character the sample never had becomes UTF-8 byte pieces, not <unk>
    assert sp.unk_id() not in sp.encode("𓀀") and sp.decode(sp.encode("𓀀")) == "𓀀"


def test_a_vocabulary_the_sample_cannot_fill_is_a_message(tokens_run, tmp_path):
    shutil.copytree(tokens_run["dir"], tmp_path / "run")
    with pytest.raises(TokenizerError, match="smaller --vocab-size"):
        train_tokenizer(str(tmp_path / "run"), ["tokenizer.vocab_size=90000"])
    assert cli_main(["train-tokenizer", str(tmp_path / "nowhere")]) == 2  # not a run: a message


def test_tokens_are_complete_and_readable(tokens_run):
    run_dir = tokens_run["dir"]
    docs = pq.read_table(run_dir / "documents").to_pylist()
    files = sorted((run_dir / "tokens").glob("*.arrow"))
    assert len(files) > 1  # the unit size cut the shard into several work units
    tokens = pa.concat_tables([_stream(f) for f in files])
    assert tokens.schema.field("input_ids").type == pa.large_list(pa.uint16())
    assert sorted(tokens["id"].to_pylist()) == sorted(d["id"] for d in docs)
    sp = _model(tokens_run)
    by_id = dict(zip(tokens["id"].to_pylist(), tokens["input_ids"].to_pylist()))
    for d in docs[:50]:
        ids = by_id[d["id"]]
        assert ids[0] == sp.bos_id() and ids[-1] == sp.eos_id()
        assert sp.decode(ids[1:-1]) == d["text"]
    # token counts per source in stats.json add up to the files
    stats = json.loads((run_dir / "stats.json").read_text())["tokens"]
    lengths = pa.compute.list_value_length(tokens["input_ids"]).to_numpy()
    sources = tokens["source"].to_numpy(zero_copy_only=False)
    for source in ("web", "news"):
        assert stats["per_source"][source]["tokens"] == lengths[sources == source].sum()
    assert stats["per_split"]["holdout"]["documents"] == sum(d["split"] == "holdout" for d in docs) > 0
    # the files open as Hugging Face datasets
    import datasets

    ds = datasets.Dataset.from_file(str(files[0]))
    assert ds.num_rows == _stream(files[0]).num_rows and ds.features["input_ids"].feature.dtype == "uint16"


def test_tokenize_resumes_and_refuses_to_mix_models(tokens_run, tmp_path):
    run_dir = str(tokens_run["dir"])
    files = sorted((tokens_run["dir"] / "tokens").glob("*.arrow"))
    before = {f: f.stat().st_mtime_ns for f in files}
    files[0].rename(f"{files[0]}.tmp-dead")  # a unit lost to a killed run, half-written: only it is redone
    (tokens_run["dir"] / "_work" / "tokens" / files[0].name.replace(".arrow", ".json")).unlink()
    tokenize(run_dir, overrides=["tokenize.unit_bytes=100000"])
    assert all(f.stat().st_mtime_ns == t for f, t in before.items() if f != files[0]) and files[0].exists()
    assert not list((tokens_run["dir"] / "tokens").glob("*.tmp-*"))
    with pytest.raises(RunConflict, match="bos differ"):
        tokenize(run_dir, overrides=["tokenize.unit_bytes=100000", "tokenize.bos=false"])
    # a missing or a wrong model file: a message, before any work
    with pytest.raises(TokenizerError, match="does not exist"):
        tokenize(run_dir, model_path=str(tmp_path / "nope.model"))
    (tmp_path / "bad.model").write_text("not a model")
    assert cli_main(["tokenize", run_dir, "--model", str(tmp_path / "bad.model")]) == 2


def test_encoder_policy_for_empty_texts_and_wide_vocabularies(tokens_run):
    model = (tokens_run["dir"] / "tokenizer" / "tokenizer.model").read_bytes()
    enc = Encoder(model, bos=True, eos=False)
    offsets, ids = enc.encode(["", "hello world", ""])
    assert list(np.diff(offsets))[0] == 0 and list(np.diff(offsets))[2] == 0  # no lone BOS for empty text
    assert ids[0] == 1 and ids[-1] != 2
    assert token_type(65536) == pa.uint16() and token_type(65537) == pa.uint32()
    assert megatron_dtype(32000) == np.uint16 and megatron_dtype(128256) == np.int32


@pytest.fixture(scope="module")
def arrow_export(tokens_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "arrow"
    manifest = export(str(tokens_run["dir"]), "arrow", str(out), ["pack.seq_len=512", "pack.seed=5"])
    return out, manifest


def test_arrow_export_holds_every_token_once_and_splits_apart(tokens_run, arrow_export):
    out, manifest = arrow_export
    tokens = pa.concat_tables([_stream(f) for f in sorted((tokens_run["dir"] / "tokens").glob("*.arrow"))])
    docs = {
        (i, s): ids
        for i, s, ids in zip(tokens["id"].to_pylist(), tokens["split"].to_pylist(), tokens["input_ids"].to_pylist())
    }
    for split in ("train", "holdout"):
        packed = pa.concat_tables([_stream(out / f) for f in manifest["splits"][split]["files"]])
        assert all(len(r) == 512 for r in packed["input_ids"].to_pylist())
        # rebuild each document from its pieces (cu_seqlens cut the rows; `documents` and
        # `document_offsets` say which part of which document each piece is)
        pieces: dict = {}
        for ids, cu, names, offsets in zip(
            *(packed[c].to_pylist() for c in ("input_ids", "cu_seqlens", "documents", "document_offsets"))
        ):
            for k, (name, offset) in enumerate(zip(names, offsets)):
                pieces.setdefault(name, []).append((offset, ids[cu[k] : cu[k + 1]]))
        rebuilt = {name: [t for _, piece in sorted(p) for t in piece] for name, p in pieces.items()}
        expected = {i: ids for (i, s), ids in docs.items() if s == split}
        assert rebuilt == expected  # no token lost, duplicated, reordered or crossing splits
        assert manifest["splits"][split]["tokens"] == sum(map(len, expected.values()))
        # best fit cuts exactly the documents longer than a sequence
        over = sum(len(ids) > 512 for ids in expected.values())
        assert (
            manifest["splits"][split]["documents_split"] == manifest["splits"][split]["documents_over_seq_len"] == over
        )
        assert sum(manifest["splits"][split]["sources"].values()) == manifest["splits"][split]["tokens"]
    assert manifest["tokenizer"]["sha256"] == tokens_run["info"]["sha256"]
    assert manifest["seed"] == 5 and manifest["seq_len"] == 512 and manifest["method"] == "bfd"
    assert manifest["source_run"]["path"] == str(tokens_run["dir"])
    import datasets

    ds = datasets.Dataset.from_file(str(out / manifest["splits"]["train"]["files"][0]))
    assert ds.features["labels"].feature.dtype == "int32" and len(ds[0]["input_ids"]) == 512


def test_export_is_deterministic_and_refuses_a_used_folder(tokens_run, arrow_export, tmp_path):
    out, manifest = arrow_export
    again = export(str(tokens_run["dir"]), "arrow", str(tmp_path / "again"), ["pack.seq_len=512", "pack.seed=5"])
    assert again["splits"] == manifest["splits"]
    for f in manifest["splits"]["train"]["files"]:
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes()
    other = export(str(tokens_run["dir"]), "arrow", str(tmp_path / "seed6"), ["pack.seq_len=512", "pack.seed=6"])
    f = manifest["splits"]["train"]["files"][0]
    assert (out / f).read_bytes() != (tmp_path / "seed6" / f).read_bytes()
    assert other["splits"]["train"]["tokens"] == manifest["splits"]["train"]["tokens"]
    with pytest.raises(RunConflict, match="finished export"):
        export(str(tokens_run["dir"]), "arrow", str(out))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli_main(["export", str(tokens_run["dir"]), "--format", "arrow", "--out", str(tmp_path / "mine")]) == 2
    # a killed export resumes: drop the manifest and one group's output, export again
    shutil.copytree(tmp_path / "again", tmp_path / "killed")
    (tmp_path / "killed" / "manifest.json").unlink()
    # as a kill between an object store's copy and delete leaves it: the file and its temporary
    (tmp_path / "killed" / f).rename(tmp_path / "killed" / f"{f}.tmp-dead")
    (tmp_path / "killed" / ".work" / f.split("/")[1].replace(".arrow", ".json")).unlink()
    resumed = export(str(tokens_run["dir"]), "arrow", str(tmp_path / "killed"), ["pack.seq_len=512", "pack.seed=5"])
    assert (tmp_path / "killed" / f).read_bytes() == (out / f).read_bytes()
    assert not list((tmp_path / "killed").rglob("*.tmp-*"))
    assert resumed["splits"] == manifest["splits"]


def test_megatron_export_reads_back_with_megatron_core(tokens_run, tmp_path):
    warnings.filterwarnings("ignore")
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    manifest = export(str(tokens_run["dir"]), "megatron", str(tmp_path / "mg"))
    tokens = pa.concat_tables([_stream(f) for f in sorted((tokens_run["dir"] / "tokens").glob("*.arrow"))])
    for split in ("train", "holdout"):
        expected = sorted(
            tuple(ids) for ids, s in zip(tokens["input_ids"].to_pylist(), tokens["split"].to_pylist()) if s == split
        )
        got = []
        for prefix in manifest["splits"][split]["files"]:
            ds = indexed.IndexedDataset(str(tmp_path / "mg" / prefix))
            assert ds.index.dtype == np.uint16
            got.extend(tuple(int(x) for x in ds[i]) for i in range(len(ds)))
        assert sorted(got) == expected
    weights = manifest["megatron_data_path"]["train"].split()
    assert sum(map(int, weights[0::2])) == manifest["splits"]["train"]["tokens"]


def test_megatron_export_of_a_wide_vocabulary(tmp_path):
    """Ids past uint16 (vocabularies over 65,535) go to int32 shards that read back exact."""
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    from slimpipe.schemas import tokens_schema
    from slimpipe.stages.export import FORMATS, export_group

    ids = [[1, 70000, 128000, 2], [], [5, 99999]]
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "source": ["s"] * 3,
            "split": ["train"] * 3,
            "input_ids": pa.array(ids, pa.large_list(pa.uint32())),
        },
        schema=tokens_schema(pa.uint32()),
    )
    (tmp_path / "tokens").mkdir()
    with pa.ipc.new_stream(str(tmp_path / "tokens" / "t.arrow"), table.schema) as w:
        w.write_table(table)
    fmt = FORMATS["megatron"]({"format": "megatron", "seed": 0, "megatron_dtype": "int32"})
    prefix = str(tmp_path / "out" / "train" / "t")
    done = export_group(
        fmt,
        {
            "group": "t",
            "tokens": str(tmp_path / "tokens" / "t.arrow"),
            "outputs": [{"split": "train", "prefix": prefix}],
        },
    )
    assert done["splits"][0]["empty"] == 1 and done["splits"][0]["documents"] == 2
    ds = indexed.IndexedDataset(prefix)
    assert ds.index.dtype == np.int32
    assert sorted(list(map(int, ds[i])) for i in range(len(ds))) == sorted([[1, 70000, 128000, 2], [5, 99999]])


def test_loader_shards_by_rank_and_resumes_at_the_same_batch(arrow_export):
    from slimpipe.loader import PackedLoader

    out, manifest = arrow_export
    n = manifest["splits"]["train"]["sequences"]
    loaders = [PackedLoader(str(out), batch_size=2, rank=r, world_size=2, seed=1) for r in range(2)]
    seen = [torch.cat([b["input_ids"] for b in loader]) for loader in loaders]
    assert seen[0].shape[0] == seen[1].shape[0] == (n // 2) // 2 * 2  # equal steps on every rank
    rows0 = {tuple(r.tolist()) for r in seen[0]}
    assert not rows0 & {tuple(r.tolist()) for r in seen[1]}  # the ranks share no sequence

    loader = PackedLoader(str(out), batch_size=2, rank=0, world_size=2, seed=1)
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint would hold
    nxt = next(it)
    resumed = PackedLoader(str(out), batch_size=2, rank=0, world_size=2, seed=1)
    resumed.load_state_dict(state)
    again = next(iter(resumed))
    for key in ("input_ids", "position_ids", "labels", "cu_seqlens"):
        assert torch.equal(again[key], nxt[key])
    b = first[0]
    assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (2, 512)
    # cu_seqlens of the batch: every row's boundaries, shifted by the row, ending at 2 * 512
    assert b["cu_seqlens"][0] == 0 and b["cu_seqlens"][-1] == 1024
    starts = torch.nonzero(b["position_ids"].reshape(-1) == 0).flatten()
    assert torch.equal(starts.to(torch.int32), b["cu_seqlens"][:-1])
    with pytest.raises(ValueError, match="batch_size"):
        PackedLoader(str(out), batch_size=4, rank=0, world_size=2, seed=1).load_state_dict(state)


TORCHRUN_RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from slimpipe.loader import PackedLoader
dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE as torchrun sets them
loader = PackedLoader(sys.argv[1], batch_size=2, seed=1, drop_last=False)  # rank and world found, not given
epochs = [[b["input_ids"].tolist() for b in loader] for _ in range(2)]
dist.barrier()
with open(sys.argv[2], "w") as f:
    json.dump({"rank": loader.rank, "world": loader.world_size, "epochs": epochs}, f)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_two_torch_distributed_ranks_read_every_sequence_once_per_epoch(arrow_export, tmp_path, storage, request):
    import collections
    import os
    import subprocess
    import sys

    from conftest import free_port, upload

    from slimpipe.loader import PackedLoader

    out, manifest = arrow_export
    n = manifest["splits"]["train"]["sequences"]
    where, storage_env = str(out), {}
    if storage == "s3":  # the ranks read the export from object storage
        s3 = request.getfixturevalue("s3_server")
        where, storage_env = f"{s3.bucket('loader')}/export", s3.env
        upload(s3.filesystem(), out, "loader/export")
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, **storage_env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        env["WORLD_SIZE"] = "2"
        args = [sys.executable, "-c", TORCHRUN_RANK_SCRIPT, where, str(tmp_path / f"rank{rank}.json")]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=120)
        assert p.returncode == 0, output
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(s["rank"], s["world"]) for s in seen] == [(0, 2), (1, 2)]

    everything = PackedLoader(str(out), batch_size=1, rank=0, world_size=1, drop_last=False)
    all_rows = collections.Counter(tuple(r) for b in everything for r in b["input_ids"].tolist())
    assert sum(all_rows.values()) == n
    for epoch in range(2):
        per_rank = [[tuple(r) for batch in s["epochs"][epoch] for r in batch] for s in seen]
        assert len(per_rank[0]) == len(per_rank[1]) == n // 2  # the same number of steps on both
        assert not set(per_rank[0]) & set(per_rank[1])  # disjoint
        together = collections.Counter(per_rank[0] + per_rank[1])
        assert not together - all_rows  # nothing read twice, nothing foreign
        assert sum((all_rows - together).values()) == n % 2  # every sequence, but the odd one out
    assert seen[0]["epochs"][0] != seen[0]["epochs"][1]  # a fresh permutation each epoch


GPU_CLUSTER_SCRIPT = """
import os, subprocess, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False})
try:
    env = dict(os.environ, RAY_ADDRESS=cluster.address)
    sys.exit(subprocess.call([sys.executable, "-m", "slimpipe.cli", "export", *sys.argv[1:]], env=env))
finally:
    cluster.shutdown()
"""


@pytest.mark.slow
def test_gpu_export_asks_ray_for_a_gpu_and_matches_the_cpu_path(tokens_run, arrow_export, tmp_path):
    """On a cluster with a (fake) GPU the packing actors are placed with num_gpus=1 and run the
    torch path; the shards are byte for byte those of the numpy path."""
    import subprocess
    import sys

    out, manifest = arrow_export
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            GPU_CLUSTER_SCRIPT,
            str(tokens_run["dir"]),
            "--format",
            "arrow",
            "--out",
            str(tmp_path / "gpu"),
            "--set",
            "pack.seq_len=512",
            "--set",
            "pack.seed=5",
            "--set",
            "pack.device=cuda",
            "--set",
            "ray.progress_bars=false",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "packing with torch" in res.stderr or "packing with torch" in res.stdout or _has_cuda()
    for split in ("train", "holdout"):
        for f in manifest["splits"][split]["files"]:
            assert (tmp_path / "gpu" / f).read_bytes() == (out / f).read_bytes()


def _has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.mark.slow
def test_ray_train_worker_reads_its_shard_and_the_loader(ray_session, arrow_export, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from slimpipe.loader import packed_dataset

    out, manifest = arrow_export
    result_file = tmp_path / "seen.json"

    def loop(cfg):
        import ray.train

        from slimpipe.loader import PackedLoader, iter_shard_batches

        shard = ray.train.get_dataset_shard("train")
        rows = sum(b["input_ids"].shape[0] for b in iter_shard_batches(shard, batch_size=2))
        loader = PackedLoader(cfg["export"], batch_size=2)  # rank and world from the Ray Train context
        with open(cfg["result"], "w") as f:
            json.dump({"shard_rows": rows, "loader_batches": len(loader), "world": loader.world_size}, f)

    trainer = TorchTrainer(
        loop,
        train_loop_config={"export": str(out), "result": str(result_file)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        datasets={"train": packed_dataset(str(out))},
        run_config=RunConfig(storage_path=str(tmp_path / "train")),
    )
    assert trainer.fit().error is None
    seen = json.loads(result_file.read_text())
    n = manifest["splits"]["train"]["sequences"]
    assert seen == {"shard_rows": n // 2 * 2, "loader_batches": n // 2, "world": 1}
