"""Bounded load test on loopback: N concurrent sessions asking through the `/ask` API for T seconds.

Starts `app.py serve` on 127.0.0.1 (a free port, its own data dir over txt/), then N client threads,
each with its own session id, ask questions about "their" document in a loop until the time is up.
Checks: zero errors, and no answer in the wrong session (each answer's first source must be the
document the session asked about). Prints p50/p95 latency and throughput; `--record` appends to
bench/RESULTS.md. Only loopback is ever contacted; loops are bounded in count and time.

    python -m bench.load_test --sessions 20 --seconds 120 [--record]
    python -m bench.load_test --sessions 20 --questions 3 --seconds 150 [--record]

With --questions N each session asks exactly N questions, one after another, and the report counts
how many were answered within the --seconds window (issue 18: 20 x 3 all answered within 150 s);
questions still unanswered when the window closes are "unanswered", not errors.
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
    ap.add_argument("--questions", type=int, help="questions per session (default: ask until --seconds are up)")
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
    finished: list[float] = []      # when each answer came, from the start of the window
    errors: list[str] = []
    wrong: list[str] = []
    lock = threading.Lock()
    stop_at = time.time() + args.seconds

    def session(i: int) -> None:
        client = Client(url, verbose=False)
        sid = f"load-{i}"
        for n in range(args.questions or MAX_REQUESTS_PER_SESSION):
            if time.time() >= stop_at:
                return
            question, doc = QUESTIONS[(i + n) % len(QUESTIONS)]
            t0 = time.perf_counter()
            try:
                answer, sources = client.predict(question, sid, api_name="/ask")
            except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                if time.time() >= stop_at + 1:
                    return       # the server was stopped at the end of the window: unanswered, not an error
                with lock:
                    errors.append(f"{type(err).__name__}: {str(err)[:120]}")
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                finished.append(time.time() - window_start)
                if not sources or sources[0]["source"] != doc or not answer.strip():
                    wrong.append(f"session {sid}: asked about {doc}, got {sources[0]['source'] if sources else None}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(args.sessions)]
    load_before = os.getloadavg()
    t0 = window_start = time.time()
    for t in threads:
        t.start()
    for t in threads:   # with --questions the window is hard: what is not answered by then stays unanswered
        t.join(timeout=max(0.0, stop_at - time.time()) if args.questions else args.seconds + 900)
    wall = time.time() - t0
    load_after = os.getloadavg()
    server.terminate()
    server.wait(timeout=60)
    result = {"sessions": args.sessions, "seconds": round(wall, 1), "requests": len(latencies),
              "errors": len(errors), "wrong_session": len(wrong),
              "p50_s": round(percentile(latencies, 50), 2), "p95_s": round(percentile(latencies, 95), 2),
              "mean_s": round(statistics.mean(latencies), 2) if latencies else None,
              "answers_per_min": round(len(latencies) / wall * 60, 1), "load_before": load_before,
              "load_after": load_after}
    if args.questions:
        asked = args.sessions * args.questions
        result.update(asked=asked, in_window=sum(f <= args.seconds for f in finished),
                      last_answer_s=round(max(finished), 1) if finished else None)
        print(f"{result['in_window']} of {asked} questions answered within {args.seconds:.0f} s "
              f"(last at {result['last_answer_s']} s); load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after")
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
                    f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}. Default profile, speech off, "
                    "server.concurrency_limit 4"
                    + (f"; {args.questions} questions per session: **{result['in_window']} of {result['asked']} "
                       f"answered within {args.seconds:.0f} s** (last at {result['last_answer_s']} s)"
                       if args.questions else "") + ".\n\n"
                    "| sessions | wall s | answers | errors | wrong session | p50 s | p95 s | answers/min |\n"
                    "|---|---|---|---|---|---|---|---|\n"
                    f"| {result['sessions']} | {result['seconds']} | {result['requests']} | {result['errors']} | "
                    f"{result['wrong_session']} | {result['p50_s']} | {result['p95_s']} | "
                    f"{result['answers_per_min']} |\n")
    return result


if __name__ == "__main__":
    main()
