"""datatrove's MinHash dedup with its defaults (MinhashConfig(): word 5-grams, 14 buckets x 8
hashes), its four stages run one after the other with local workers, as its README shows.
Run with a Python that has datatrove installed (not a project dependency):

    DT_PYTHON bench/datatrove_minhash.py INPUT_DIR WORK_DIR --workers 2

Prints one JSON line: seconds per stage and in total, and the ids it removed go to
WORK_DIR/removed (JSONL). With --time-signatures FILE.jsonl, instead times its signature step
alone (its shingling and hashing of each text, one core) and prints the seconds."""

import argparse
import json
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def time_signatures(path: str) -> None:
    texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    step = MinhashDedupSignature(output_folder="/tmp", config=MinhashConfig())
    t = time.perf_counter()
    for text in texts:
        step.get_signature(step.get_shingles(text))
    print(json.dumps({"documents": len(texts), "seconds": time.perf_counter() - t}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("input", nargs="?")
    p.add_argument("work", nargs="?")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--time-signatures", metavar="FILE")
    args = p.parse_args()
    if args.time_signatures:
        return time_signatures(args.time_signatures)
    config = MinhashConfig()
    tasks = 2 * args.workers
    reader = lambda: JsonlReader(args.input, glob_pattern="**/*.jsonl.zst", compression="zstd")  # noqa: E731
    stages = {
        "signatures": LocalPipelineExecutor(
            pipeline=[reader(), MinhashDedupSignature(output_folder=f"{args.work}/signatures", config=config)],
            tasks=tasks,
            workers=args.workers,
            logging_dir=f"{args.work}/logs/signatures",
        ),
        "buckets": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupBuckets(
                    input_folder=f"{args.work}/signatures", output_folder=f"{args.work}/buckets", config=config
                )
            ],
            tasks=config.num_buckets,
            workers=args.workers,
            logging_dir=f"{args.work}/logs/buckets",
        ),
        "cluster": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupCluster(
                    input_folder=f"{args.work}/buckets", output_folder=f"{args.work}/remove_ids", config=config
                )
            ],
            tasks=1,
            workers=1,
            logging_dir=f"{args.work}/logs/cluster",
        ),
        "filter": LocalPipelineExecutor(
            pipeline=[
                reader(),
                MinhashDedupFilter(
                    input_folder=f"{args.work}/remove_ids", exclusion_writer=JsonlWriter(f"{args.work}/removed")
                ),
                JsonlWriter(f"{args.work}/deduped"),
            ],
            tasks=tasks,
            workers=args.workers,
            logging_dir=f"{args.work}/logs/filter",
        ),
    }
    seconds = {}
    start = time.perf_counter()
    for name, executor in stages.items():
        t = time.perf_counter()
        executor.run()
        seconds[name] = round(time.perf_counter() - t, 2)
    seconds["total"] = round(time.perf_counter() - start, 2)
    print(json.dumps({"config": str(config), "stage_seconds": seconds}))


if __name__ == "__main__":
    main()
