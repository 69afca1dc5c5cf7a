"""What a first GPU run on Slurm needs from the launcher, shown without a GPU (issue 13, review items A2, A3,
A4, B2, B3, C8, C9, C11, C12): GPU binding, the job environment, the sbatch text, the plan's advice.

Fast: no training, except one test that starts two ranks of a real entrypoint (about 10 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch import jobs
from launch.cost import memory
from launch.run import local, submit
from launch.site.gpus import GpuBindingError, check_gpu_binding, cuda_hidden, visible_devices
from launch.spec import hub
from launch.spec.config import LoraSettings, MethodConfig, Resources, load_config
from launch.store.expdir import ExperimentDir
from support.experiments import new_experiment

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "tests" / "support" / "dist_train_entry.py"


# --------------------------------------------------------------------------- A2, A3: which GPUs a rank sees


def test_visible_devices_and_cuda_hidden_read_the_environment(tmp_path):
    driver = tmp_path / "nvidiactl"
    assert visible_devices({}) is None and visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,1, 2"}) == ["0", "1", "2"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == ["0"]  # CUDA stops at the first invalid entry
    # Hidden: set empty (or -1), or no driver at all; visible: a driver and no variable, or any entry.
    assert cuda_hidden({"CUDA_VISIBLE_DEVICES": ""}, driver) and cuda_hidden({"CUDA_VISIBLE_DEVICES": "-1"}, driver)
    assert cuda_hidden({}, driver)
    driver.touch()
    assert not cuda_hidden({}, driver) and cuda_hidden({"CUDA_VISIBLE_DEVICES": ""}, driver)
    assert not cuda_hidden({"CUDA_VISIBLE_DEVICES": "0"}, driver)


def test_ds_accelerator_is_forced_to_cpu_only_where_cuda_is_hidden(monkeypatch):
    """Old code: on a GPU node with CUDA_VISIBLE_DEVICES= (hidden) DeepSpeed was left to probe, and the
    test suite forced it to CPU even where accelerate picked CUDA."""
    monkeypatch.setattr(jobs, "cuda_hidden", lambda: True)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    jobs._compute_env(None)
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setattr(jobs, "cuda_hidden", lambda: False)
    monkeypatch.delenv("DS_ACCELERATOR")
    jobs._compute_env(None)
    assert "DS_ACCELERATOR" not in os.environ


@pytest.mark.parametrize(
    "devices, local_world, ok",
    [
        ("0", "2", False),  # per-task binding: each of 2 tasks sees one GPU
        ("0,1,2,3", "8", False),  # one NUMA domain's worth of 8
        ("0,1", "2", True),  # every task sees the node's GPUs
        ("GPU-a,GPU-b", "2", True),
        (None, "8", True),  # not set: every GPU of the machine is visible
        ("", "2", True),  # CUDA hidden: a CPU run (gloo), nothing to bind
        ("0", "1", True),  # one process
    ],
)
def test_gpu_binding_guard(devices, local_world, ok):
    env = {"LOCAL_WORLD_SIZE": local_world, "LOCAL_RANK": "1", "RANK": "9"}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    if ok:
        check_gpu_binding(env)
        return
    with pytest.raises(GpuBindingError) as err:
        check_gpu_binding(env)
    text = str(err.value)
    assert f"LOCAL_RANK=1 of {local_world} tasks" in text and f"CUDA_VISIBLE_DEVICES={devices}" in text
    assert "invalid device ordinal" in text and "--gpu-bind=none" in text and "->" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_that_each_see_one_gpu_stop_with_the_reason_before_training(tmp_path, tiny_model):
    """Review A2's check: two processes of one node, each with CUDA_VISIBLE_DEVICES=0, running ZeRO-2 full SFT.

    On a GPU node rank 1 used to die in init_process_group ("invalid device ordinal"); here, on CPU, the
    old code just trained. Both ranks must now stop with the binding error, before any model is loaded.
    """
    overrides = [
        f"model.name_or_path={tiny_model}",
        f"output_dir={tmp_path / 'runs'}",
        "tracking.backend=none",
        "data.max_train=16",
        "data.max_eval=8",
        "methods.full_sft.max_steps=2",
        f"methods.full_sft.deepspeed={REPO / 'ds_configs' / 'zero2.json'}",
    ]
    cfg, exp_dir = new_experiment(overrides)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            CUDA_VISIBLE_DEVICES="0",
            OMP_NUM_THREADS="1",
            HF_HUB_OFFLINE="1",
        )
        cmd = [sys.executable, str(ENTRY), "train", str(exp_dir), "full_sft", str(tmp_path / "out")]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=180)[0])
        finally:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode != 0, f"rank {rank} trained although it sees one GPU of two:\n{out[-3000:]}"
        assert "GpuBindingError" in out and f"LOCAL_RANK={rank} of 2 tasks" in out, out[-3000:]
        assert "sees 1 GPU (CUDA_VISIBLE_DEVICES=0)" in out, out[-3000:]
    metrics = json.loads(exp_dir.method("full_sft").metrics_file.read_text())
    assert metrics["status"] == "failed" and "GpuBindingError" in metrics["error"]
    assert not exp_dir.method("full_sft").model_dir.exists()


# --------------------------------------------------------------------------- C8, C9: rendezvous environment


def test_master_port_is_below_the_ephemeral_range():
    ports = {jobs.master_port(str(j)) for j in range(0, 200_000, 7)}
    assert min(ports) >= 20000 and max(ports) < 32768  # Linux ephemeral ports start at 32768
    assert jobs.master_port("12000") != jobs.master_port("12001")


def test_single_task_job_drops_rendezvous_variables_from_the_submitting_shell(monkeypatch):
    """A lone process that inherits RANK/WORLD_SIZE=2 from the shell would wait for a rank that never comes."""
    stale = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "10.0.0.9",
        "MASTER_PORT": "29500",
    }
    for key, value in stale.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    jobs.export_distributed_env()
    assert not set(stale) & set(os.environ)


# --------------------------------------------------------------------------- A2, B2, A4: the sbatch text


def _plan(tiny_model: Path, tmp_path: Path, *extra: str, profile: str = "dev") -> dict[str, submit.JobSpec]:
    result = submit.check(
        "configs/smoke.yaml", [f"model.name_or_path={tiny_model}", f"output_dir={tmp_path}", *extra], profile
    )
    assert result.problems == []
    return {s.name: s for s in submit.plan(result.cfg, result.profile, ExperimentDir(tmp_path))}


def test_sbatch_gives_srun_the_cpus_and_multi_gpu_tasks_every_gpu_of_their_node(tmp_path, tiny_model):
    specs = _plan(
        tiny_model, tmp_path, "methods.full_sft.resources.nodes=2", "methods.full_sft.resources.gpus_per_node=2"
    )
    ids = {name: f"<{name}>" for name in specs}
    for name, spec in specs.items():
        text = submit.sbatch_script(spec, ExperimentDir(tmp_path), "python3", ids)
        setup = text[text.index("# setup") : text.index("# command")]
        srun = next(line for line in text.splitlines() if line.startswith("srun "))
        # Slurm 22.05+: srun no longer inherits --cpus-per-task; without this each task gets one core.
        assert "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK\n" in setup, name
        assert f"#SBATCH --cpus-per-task={spec.threads}" in text
        assert ("--gpu-bind=none" in srun) == (name == "full_sft"), (name, srun)
    assert specs["full_sft"].params["srun_args"] == ["--kill-on-bad-exit=1", "--gpu-bind=none"]


def test_jobs_load_a_local_model_offline(tmp_path, tiny_model):
    """A local model directory: no rank needs the hub, so the jobs run with HF_HUB_OFFLINE=1."""
    spec = _plan(tiny_model, tmp_path)["lora"]
    assert "export HF_HUB_OFFLINE=1" in spec.params["setup"]


def _cache_model(cache: Path, repo_id: str, files: dict[str, str]) -> None:
    snap = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc")


def test_hub_model_in_the_jobs_cache_or_not(tmp_path):
    cache = tmp_path / "hf" / "hub"
    env = {"HF_HOME": str(tmp_path / "hf")}
    assert hub.prefetch_note("acme/llama", env) is not None and not hub.offline_ok("acme/llama", env)
    _cache_model(cache, "acme/llama", {"config.json": "{}"})  # config only, e.g. from the memory check
    assert not hub.is_cached("acme/llama", env)
    shards = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    _cache_model(
        cache,
        "acme/sharded",
        {"config.json": "{}", "model.safetensors.index.json": json.dumps(shards), "model-1.safetensors": "x"},
    )
    assert not hub.is_cached("acme/sharded", env)  # a shard is missing: loading offline would fail
    (cache / "models--acme--sharded" / "snapshots" / "abc" / "model-2.safetensors").write_text("x")
    assert hub.is_cached("acme/sharded", env) and hub.offline_ok("acme/sharded", env)
    assert hub.prefetch_note("acme/sharded", env) is None
    # The profile's HF_HOME is the cache the jobs use, whatever this shell says.
    assert hub.job_env({"HF_HOME": "/shared/hf"})["HF_HOME"] == "/shared/hf"


def _profile(tmp_path: Path, **changes) -> Path:
    profile = yaml.safe_load((REPO / "slurm/profiles/example-a100.yaml").read_text())
    profile.update(name="site", shared_dirs=[], **changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_hub_model_not_in_the_cache_gets_a_prefetch_note_and_no_offline_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "login-hf"))
    profile = _profile(tmp_path, env={"HF_HOME": str(tmp_path / "shared-hf")})
    data = "data.train.path=data/sample/cyber_mcq.json"
    result = submit.check("configs/llama3-8b-cybermetric.yaml", [data], str(profile))
    assert result.problems == []  # a note, not a refusal: sites whose nodes reach the hub still work
    (note,) = [n for n in result.notes if n.startswith("model.name_or_path")]
    assert str(tmp_path / "shared-hf" / "hub") in note and "hf download meta-llama/Meta-Llama-3-8B-Instruct" in note
    specs = submit.plan(result.cfg, result.profile, ExperimentDir(tmp_path))
    assert all("export HF_HUB_OFFLINE=1" not in s.params["setup"] for s in specs)
    assert "# ---- notes (not problems)" in submit.dry_run_text(result, ExperimentDir(tmp_path))
    # Once the shared cache has the whole model, the note goes and the jobs load it offline.
    _cache_model(
        tmp_path / "shared-hf" / "hub",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        {"config.json": "{}", "model.safetensors": "x"},
    )
    result = submit.check("configs/llama3-8b-cybermetric.yaml", [data], str(profile))
    assert not [n for n in result.notes if n.startswith("model.name_or_path")]
    specs = submit.plan(result.cfg, result.profile, ExperimentDir(tmp_path))
    assert all("export HF_HUB_OFFLINE=1" in s.params["setup"] for s in specs)


# --------------------------------------------------------------------------- B3, C12: the plan's memory


@pytest.fixture
def shape8b(tmp_path, monkeypatch) -> memory.ModelShape:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))
    return memory.model_shape("meta-llama/Meta-Llama-3-8B-Instruct")


def test_seed_study_is_zero2_on_one_node_and_fits_without_recompute(shape8b, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / "llama3-8b-cybermetric.yaml", ["data.train.path=data/sample/cyber_mcq.json"])
    sft = cfg.method("full_sft")
    assert (sft.deepspeed, sft.resources.nodes, sft.resources.gpus_per_node) == ("ds_configs/zero2.json", 1, 8)
    assert sft.micro_batch_size * sft.grad_accum_steps * 8 == 128  # the global batch of the former 2-node plan
    for m in cfg.methods:
        est = memory.estimate(shape8b, m, cfg.model.max_seq_len, REPO)
        assert memory.fit_problems(est, 80, m) == [], est.line()
        # Checkpointing only where the plan would not fit without it.
        assert memory.checkpointing_advice(est, 80, m) is None, m.name


def test_memory_check_advises_turning_checkpointing_off_when_the_plan_fits_without_it(shape8b):
    lora = MethodConfig(
        name="lora",
        kind="lora",
        precision="bf16",
        micro_batch_size=8,
        gradient_checkpointing=True,
        lora=LoraSettings(r=16, dropout=0.05),
        resources=Resources(gpus_per_node=1),
    )
    est = memory.estimate(shape8b, lora, 512, REPO)
    advice = memory.checkpointing_advice(est, 80, lora)
    assert advice.startswith("methods.lora.gradient_checkpointing: true, but the plan fits without it (")
    assert "-> gradient_checkpointing: false" in advice
    assert memory.checkpointing_advice(est, 40, lora) is None  # without it 64 GB: does not fit a 40 GB GPU
    off = dataclasses.replace(lora, gradient_checkpointing=False)
    assert memory.checkpointing_advice(memory.estimate(shape8b, off, 512, REPO), 80, off) is None


def test_dry_run_shows_the_checkpointing_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = submit.check(
        "configs/llama3-8b-cybermetric.yaml",
        ["data.train.path=data/sample/cyber_mcq.json", "methods.lora.gradient_checkpointing=true"],
        str(_profile(tmp_path)),
    )
    assert [n for n in result.notes if n.startswith("methods.lora.gradient_checkpointing: true")]


def test_qlora_activations_are_counted_at_fp32_size(shape8b):
    """After prepare_model_for_kbit_training QLoRA's residual stream, norms and logits are fp32."""
    kw = dict(
        precision="bf16",
        micro_batch_size=4,
        gradient_checkpointing=False,
        lora=LoraSettings(r=16, dropout=0.0),
        resources=Resources(gpus_per_node=1),
    )
    qlora = memory.estimate(shape8b, MethodConfig(name="q", kind="qlora", **kw), 512)
    lora = memory.estimate(shape8b, MethodConfig(name="l", kind="lora", **kw), 512)
    tokens, labelled = memory.peak_rows(None, 4, 512, packed=True)  # no lengths known: 4 rows of 512
    fp32 = memory.activation_bytes(shape8b, tokens, False, fp32=True, logit_tokens=labelled) / memory.GB
    assert qlora.activations_gb == pytest.approx(fp32) and qlora.activations_gb > 1.8 * lora.activations_gb


# --------------------------------------------------------------------------- C11: local runs


def test_local_run_warns_about_multi_gpu_methods(tiny_model):
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [
            f"model.name_or_path={tiny_model}",
            "methods.full_sft.resources.nodes=2",
            "methods.full_sft.resources.gpus_per_node=2",
        ],
    )
    (warning,) = local.multi_device_warnings(cfg)
    assert warning.startswith("full_sft: resources ask for 2 node(s) x 2 GPU(s)") and "1/4 of the planned" in warning
    assert "cyberft submit" in warning


def test_new_launch_modules_load_no_torch():
    code = (
        "import sys; import launch.site.gpus, launch.spec.hub, launch.jobs, launch.run.submit, launch.run.local;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'accelerate'}))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr + res.stdout
