"""What bench/run_all.py measures with, apart from the servers it drives: the CPU a process tree
used (from /proc), this machine's speed right now, ApacheBench runs, and optional profiles (cProfile
in process, py-spy of the servers) for finding where the time goes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

BIN = Path(sys.executable).parent


def in_process_profile(name: str):
    """BENCH_PROFILE=dir: write a cProfile of the in-process measurement there (for finding where time goes)."""
    where = os.environ.get("BENCH_PROFILE")
    if not where:
        return lambda: None
    import cProfile

    prof = cProfile.Profile()
    prof.enable()

    def stop():
        prof.disable()
        Path(where).mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(Path(where) / f"{name}.prof"))

    return stop


def py_spy(env_var: str, pid: int, seconds: int):
    """$env_var=file: py-spy records process `pid` (and its children) there in raw collapsed stacks,
    until the returned stop() or `seconds`; BENCH_PYSPY_ARGS adds options (--gil: CPU, not waits)."""
    out = os.environ.get(env_var)
    if not out:
        return lambda: None
    spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--subprocesses", "--nonblocking",
                            *os.environ.get("BENCH_PYSPY_ARGS", "").split(), "-p", str(pid), "-d", str(seconds),
                            "-f", "raw", "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)

    def stop():
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        spy.wait()

    return stop


def worker_cpu_seconds(master_pid: int) -> float:
    """User + system CPU of a gunicorn master's workers (the server's cost, not the clients')."""
    return sum(process_cpu_seconds(pid) for pid in _children(master_pid))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (a gunicorn worker; the Celery worker: the background half of
    an enrollment); 0 for one that has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def settle(pid: int, quiet: float = 1.0, limit: float = 120.0) -> float:
    """Wait until process `pid` (the Celery worker) has used no CPU for `quiet` seconds; returns the CPU
    it used meanwhile."""
    start = last = process_cpu_seconds(pid)
    still, deadline = time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = process_cpu_seconds(pid)
        if now - last > 0.01:
            last, still = now, time.monotonic()
        elif time.monotonic() - still >= quiet:
            break
    return last - start


def machine_speed() -> tuple[float, float]:
    """This machine's speed right now, to compare runs: one RSA-3072 signature (ms) and a loop of 2
    million Python additions (s). The same code measured 2-3x apart as the shared machine's speed moved."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    t0 = time.perf_counter()
    for _ in range(50):
        key.sign(b"speed", padding.PKCS1v15(), hashes.SHA256())
    sign_ms = (time.perf_counter() - t0) / 50 * 1000
    t0, total = time.perf_counter(), 0
    for i in range(2_000_000):
        total += i
    return sign_ms, time.perf_counter() - t0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def ab_rate(url: str, body: bytes, signature: str, concurrency: int, requests: int, tmp: Path) -> tuple[float, int]:
    """ApacheBench (a C client: the client costs next to nothing), keep-alive, one device's signed
    Idle replayed. Returns (requests/s, non-2xx)."""
    body_file = tmp / "idle.plist"
    body_file.write_bytes(body)
    out = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), "-n", str(requests), "-u", str(body_file),
                          "-T", "application/x-apple-aspen-mdm", "-H", f"Mdm-Signature: {signature}", url],
                         capture_output=True, text=True, timeout=600).stdout
    rate = float(next(line.split()[3] for line in out.splitlines() if line.startswith("Requests per second")))
    bad = next((int(line.split()[-1]) for line in out.splitlines() if line.startswith("Non-2xx responses")), 0)
    failed = next((int(line.split()[2]) for line in out.splitlines() if line.startswith("Failed requests")), 0)
    return rate, bad + failed


def ab_runs(mdm_url: str, bare_url: str, req: tuple[bytes, str], concurrency: int, repeat: int, tmp: Path,
            spy=lambda: (lambda: None)) -> list:
    """`spy()` starts recording the server during the first MDM run and returns its stop()."""
    import shutil

    if shutil.which("ab") is None:
        return []  # reported as "not measured (apt install apache2-utils)"
    runs = []
    for i in range(repeat):
        stop = spy() if i == 0 else (lambda: None)
        m, m_bad = ab_rate(mdm_url, req[0], req[1], concurrency, 20000, tmp)
        stop()
        b, b_bad = ab_rate(bare_url, req[0], req[1], concurrency, 20000, tmp)
        runs.append((m, b, m_bad + b_bad))
    return runs
