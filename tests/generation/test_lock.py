"""The cache entry's lock: exclusive, stale locks broken (dead PID on this host, no heartbeat), waiters wait;
two processes racing for one recipe generate it once; split generations (--gen_groups) keep their keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from d4c.errors import D4CError
from d4c.generation.cache import PseudoImageCache, build_recipe, recipe_key
from d4c.generation.lock import EntryLock
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import group_seed, group_sizes, synthesize
from d4c.runtime import ProcessShare

REPO = Path(__file__).resolve().parents[2]
BASE = GenerationSettings(method="d4c", num_images=6, gen_batch_size=2, gen_iter=2).with_options(d4c_config=0)
PROMPTS = ["a photo of a loop.", "a photo of a hook."]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = EntryLock(tmp_path / "e.lock"), EntryLock(tmp_path / "e.lock", poll_s=0.05)
    assert a.try_acquire() and a.held
    assert not b.try_acquire() and not b.acquire(timeout_s=0.2)
    holder = a.holder()
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    b.release()  # not its lock: nothing happens
    assert (tmp_path / "e.lock").exists()
    a.release()
    assert not (tmp_path / "e.lock").exists() and b.try_acquire()
    b.release()


def test_stale_locks_are_broken_by_dead_pid_or_age(tmp_path):
    path = tmp_path / "e.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"}))
    lock = EntryLock(path)
    assert lock.is_stale() and lock.try_acquire() and lock.holder()["pid"] == os.getpid()
    lock.release()
    # another host's live-looking lock: stale only once its heartbeat is older than stale_after_s
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    fresh = EntryLock(path, stale_after_s=60)
    assert not fresh.is_stale() and not fresh.try_acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    assert fresh.is_stale() and fresh.try_acquire()
    fresh.release()


def test_heartbeat_keeps_a_long_generation_fresh(tmp_path):
    lock = EntryLock(tmp_path / "e.lock", heartbeat_s=0.05, stale_after_s=0.5)
    assert lock.try_acquire()
    old = time.time() - 100
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert not EntryLock(lock.path, stale_after_s=0.5).is_stale()
    lock.release()


RACE = """
import json, sys
import d4c
from d4c.generation.cache import PseudoImageCache
from d4c.generation.settings import GenerationSettings
from d4c.generation.synthesis import synthesize
from d4c.models.loading import load_clip
settings = GenerationSettings(method="d4c", num_images=4, gen_batch_size=2, gen_iter=40).with_options(d4c_config=0)
outcome = synthesize(settings, load_clip("tiny-rn"), "cpu", ["a photo of a loop."],
                     cache=PseudoImageCache(sys.argv[1]), progress=False)
print(json.dumps({"from_cache": outcome.from_cache, "sum": float(outcome.images.sum())}))
"""


@pytest.mark.slow
def test_two_processes_racing_for_one_entry_generate_it_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "cache")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["from_cache"] for r in results) == [False, True]  # one generated, the other waited and reused
    assert results[0]["sum"] == results[1]["sum"]
    assert not list((tmp_path / "cache").glob("*.lock")) and len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_group_seeds_and_sizes():
    seeds = {group_seed(s, g) for s in range(4) for g in range(8)}
    assert len(seeds) == 32 and all(0 <= s < 2**32 for s in seeds)
    assert group_sizes(10, 3) == [4, 3, 3] and group_sizes(6, 6) == [1] * 6
    with pytest.raises(D4CError, match="gen_groups must be between 1 and the number of images"):
        replace(BASE, gen_groups=7)


def test_one_group_keeps_the_existing_cache_keys_and_more_groups_change_them():
    def key(settings):
        return recipe_key(build_recipe(settings, "tiny-rn", "x", 64, PROMPTS))

    recipe = build_recipe(BASE, "tiny-rn", "x", 64, PROMPTS)
    assert "gen_groups" not in recipe  # entries written before --gen_groups existed stay valid
    assert key(replace(BASE, gen_groups=2)) != key(BASE) != key(replace(BASE, gen_groups=3))


def test_split_generation_is_the_same_for_any_process_count_and_caches_whole(tiny_rn, tmp_path):
    settings = replace(BASE, gen_groups=3)
    alone = synthesize(settings, tiny_rn, "cpu", PROMPTS, cache=PseudoImageCache(tmp_path / "a"), progress=False)
    assert alone.complete and alone.images.shape[0] == 6 and alone.targets.shape == (6,)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 2 and not any("group" in f for f in files)  # groups assembled, then removed
    # process 1 of 2 makes groups 1 (and keeps them for rank 0); process 0 makes 0 and 2 and assembles
    cache = PseudoImageCache(tmp_path / "b")
    second = synthesize(settings, tiny_rn, "cpu", PROMPTS, cache=cache, progress=False, share=ProcessShare(1, 2))
    assert not second.complete and second.images.shape[0] == 2
    first = synthesize(settings, tiny_rn, "cpu", PROMPTS, cache=cache, progress=False, share=ProcessShare(0, 2))
    assert first.complete and torch.equal(first.images, alone.images) and torch.equal(first.targets, alone.targets)
    # each group is its own generation: the first group equals a 2-image generation with the group's seed
    group0 = synthesize(replace(BASE, num_images=2, seed=group_seed(0, 0)), tiny_rn, "cpu", PROMPTS, progress=False)
    assert torch.equal(group0.images, alone.images[:2])
    again = synthesize(settings, tiny_rn, "cpu", PROMPTS, cache=PseudoImageCache(tmp_path / "a"), progress=False)
    assert again.from_cache and torch.equal(again.images, alone.images)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_for_the_same_groups(tmp_path):
    common = ["--model", "tiny-rn", "--gen_method", "d4c", "--d4c_config", "1", "--gen_iter", "2", "--num_images", "6",
              "--gen_batch_size", "2", "--gen_groups", "3", "--no_progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29731", str(REPO / "scripts" / "generate.py"), *common, "--gen_cache_dir",
                          str(tmp_path / "two"), "--summary", str(tmp_path / "two.json")],
                         capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run([sys.executable, str(REPO / "scripts" / "generate.py"), *common, "--gen_cache_dir",
                          str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = (torch.load(next((tmp_path / d).glob("*.pt")), weights_only=True) for d in ("one", "two"))
    assert a["key"] == b["key"] and torch.equal(a["images"], b["images"]) and torch.equal(a["targets"], b["targets"])
    assert json.loads((tmp_path / "two.json").read_text())["settings"]["gen_groups"] == 3
    assert "process 1 of 2" in two.stdout + two.stderr
