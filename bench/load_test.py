"""Bounded load test on loopback: N concurrent sessions asking through the `/ask` API for T seconds.

Starts `app.py serve` on 127.0.0.1 (a free port, its own data dir over txt/), then N client threads,
each with its own session id, ask questions about "their" document in a loop until the time is up.
Checks: zero errors, and no answer in the wrong session (each answer's first source must be the
document the session asked about). Prints p50/p95 latency and throughput; `--record` appends to
bench/RESULTS.md. Only loopback is ever contacted; loops are bounded in count and time.

    python -m bench.load_test --sessions 20 --seconds 120 [--record]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [   # (question, the document whose passage must come first)
    ("When did the Harbor Point library abolish fines?", "harbor-library.md"),
    ("How many panels does the Millstream solar garden have?", "solar-garden.md"),
    ("How often should a bicycle chain be oiled?", "bicycle-care.txt"),
    ("What battery did the Millstream cooperative add in 2023?", "solar-garden.md"),
    ("Who was the first librarian of the Harbor Point library?", "harbor-library.md"),
    ("What tyre pressure do city bicycle tyres want?", "bicycle-care.txt"),
]
MAX_REQUESTS_PER_SESSION = 200


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def start_server(data_dir: str, port: int, extra: list[str]) -> subprocess.Popen:
    log = open(Path(data_dir) / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--data-dir", data_dir, *extra, "serve",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, stdout=log, stderr=log)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {data_dir}/server.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(2)
                return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("server did not start in 10 minutes")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    from gradio_client import Client

    data_dir = tempfile.mkdtemp(prefix="bench-load-")
    port = free_port()
    extra = [f"--set={s}" for s in args.set] + ["--set=tts.enabled=false",
                                                 f"--set=server.concurrency_limit=4", "--set=server.max_queue=64"]
    t_start = time.time()
    server = start_server(data_dir, port, extra)
    print(f"server up in {time.time() - t_start:.1f} s on 127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/"
    latencies: list[float] = []
    errors: list[str] = []
    wrong: list[str] = []
    lock = threading.Lock()
    stop_at = time.time() + args.seconds

    def session(i: int) -> None:
        client = Client(url, verbose=False)
        sid = f"load-{i}"
        for n in range(MAX_REQUESTS_PER_SESSION):
            if time.time() >= stop_at:
                return
            question, doc = QUESTIONS[(i + n) % len(QUESTIONS)]
            t0 = time.perf_counter()
            try:
                answer, sources = client.predict(question, sid, api_name="/ask")
            except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    errors.append(f"{type(err).__name__}: {str(err)[:120]}")
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if not sources or sources[0]["source"] != doc or not answer.strip():
                    wrong.append(f"session {sid}: asked about {doc}, got {sources[0]['source'] if sources else None}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(args.sessions)]
    load_before = os.getloadavg()
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.seconds + 900)
    wall = time.time() - t0
    server.terminate()
    server.wait(timeout=60)
    result = {"sessions": args.sessions, "seconds": round(wall, 1), "requests": len(latencies),
              "errors": len(errors), "wrong_session": len(wrong),
              "p50_s": round(percentile(latencies, 50), 2), "p95_s": round(percentile(latencies, 95), 2),
              "mean_s": round(statistics.mean(latencies), 2) if latencies else None,
              "answers_per_min": round(len(latencies) / wall * 60, 1), "load_before": load_before}
    print("| sessions | wall s | answers | errors | wrong session | p50 s | p95 s | answers/min |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {result['sessions']} | {result['seconds']} | {result['requests']} | {result['errors']} | "
          f"{result['wrong_session']} | {result['p50_s']} | {result['p95_s']} | {result['answers_per_min']} |")
    for line in (errors + wrong)[:10]:
        print("  ", line)
    if args.record:
        from bench.common import commit, machine

        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## Load test: {args.sessions} sessions through /ask for {args.seconds:.0f} s\n\n"
                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit()}, {machine()}; "
                    f"load average before {load_before[0]:.1f}. Default profile, speech off, "
                    "server.concurrency_limit 4.\n\n"
                    "| sessions | wall s | answers | errors | wrong session | p50 s | p95 s | answers/min |\n"
                    "|---|---|---|---|---|---|---|---|\n"
                    f"| {result['sessions']} | {result['seconds']} | {result['requests']} | {result['errors']} | "
                    f"{result['wrong_session']} | {result['p50_s']} | {result['p95_s']} | "
                    f"{result['answers_per_min']} |\n")
    return result


if __name__ == "__main__":
    main()
