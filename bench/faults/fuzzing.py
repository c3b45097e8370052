"""Runs the cargo-fuzz targets under fuzz/ for a bounded time each."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from infra import log

TARGETS = ["ingest_decode", "rest_request"]


def run(ctx) -> list[dict]:
    fuzz_dir = os.path.join(ctx.root, "fuzz")
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    results = []
    build = subprocess.run(["cargo", "fuzz", "build", "-O", "--debug-assertions"], cwd=fuzz_dir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)
    if build.returncode != 0:
        log("cargo fuzz build failed")
        return [{"target": t, "error": "build failed: " + build.stdout.decode()[-1500:]} for t in TARGETS]
    for target in TARGETS:
        corpus = os.path.join(fuzz_dir, "corpus", target)
        os.makedirs(corpus, exist_ok=True)
        seeds = os.path.join(fuzz_dir, "seeds", target)
        artifacts = os.path.join(fuzz_dir, "artifacts", target) + "/"
        os.makedirs(artifacts, exist_ok=True)
        before = set(os.listdir(artifacts))
        args = ["cargo", "fuzz", "run", "-O", "--debug-assertions", target, corpus, seeds, "--",
                f"-max_total_time={ctx.args.fuzz_seconds}", "-timeout=10", "-rss_limit_mb=4096",
                f"-artifact_prefix={artifacts}", "-print_final_stats=1"]
        log(f"fuzzing {target} for {ctx.args.fuzz_seconds}s")
        try:
            p = subprocess.run(args, cwd=fuzz_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=ctx.args.fuzz_seconds + 600)
            out, rc = p.stdout.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode(errors="replace"), -1
        open(os.path.join(ctx.workdir, f"fuzz-{target}.log"), "w").write(out)
        execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", out)
        speed = re.findall(r"stat::average_exec_per_sec:\s*(\d+)", out)
        cov = re.findall(r"cov: (\d+)", out)
        new_artifacts = sorted(set(os.listdir(artifacts)) - before)
        panics = len([a for a in new_artifacts if a.startswith(("crash-", "oom-", "timeout-", "leak-"))])
        message = ""
        m = re.search(r"panicked at (.*)\n(.*)", out)
        if m:
            message = (m.group(1) + " " + m.group(2)).strip()[:300]
        elif rc not in (0,):
            m = re.search(r"==\d+== ERROR: (.*)", out)
            message = m.group(1)[:300] if m else out.strip().splitlines()[-1][:300] if out.strip() else ""
        results.append({"target": target, "seconds": ctx.args.fuzz_seconds, "rc": rc,
                        "executions": int(execs[-1]) if execs else None,
                        "exec_per_s": int(speed[-1]) if speed else None, "coverage": int(cov[-1]) if cov else None,
                        "corpus": len(os.listdir(corpus)), "seeds": len(os.listdir(seeds)),
                        "panics": panics if rc == 0 else max(1, panics), "artifacts": new_artifacts,
                        "message": message})
        log(f"fuzz {target}: {results[-1]}")
    if not ctx.args.keep:
        shutil.rmtree(os.path.join(fuzz_dir, "corpus"), ignore_errors=True)
    return results
