"""`dg-heads sweep SPEC.yaml`: methods x datasets x test domains x trial seeds x hyper-parameters
become a job list, one `lightning fit ...` command per line, for a SLURM array (`--launcher
print`, the default: the sbatch line is printed; `slurm`: submitted) or run on this machine
(`--launcher local --jobs N`), as DomainBed's command launchers.

A spec (YAML):

    runs_dir: runs/sweeps/pacs          # every job's folder goes under it
    configs:                            # every job's config files, composed in order (quoted in YAML:
      - configs/trainer/gpu.yaml        #   `{dataset}` / `{method}` become each job's dataset / method)
      - "configs/data/{dataset}.yaml"
      - "configs/method/{method}.yaml"
    methods:                            # name: {args: [...], grid: {...}, configs: [...], subcommand: ...},
      hap:                              #   each optional (a method's own `configs` replace the spec's),
      lora: {}                          #   or a list of config files
      zero_shot: {subcommand: test}     # `fit` (default: train, then test the selected checkpoint) or
                                        #   `test` (nothing trains: the held-out domain is scored)
      mmd_on_lora: {datasets: [office_home]}   # a method on some of the spec's datasets only
      ha_lora_only: [configs/trainer/gpu.yaml, "configs/data/{dataset}.yaml", configs/method/hap.yaml,
                     configs/method/hap_variants/ha_lora_only.yaml]
    datasets:                           # name: test domains, one job each (leave-one-domain-out);
      pacs: [art_painting, cartoon, photo, sketch]   # `all` = every domain of the registry, or
      domain_net: {domains: all, args: [--trainer.max_steps, "15000"]}  # with arguments of its own
                                        #   (after the spec's `args`, before a method's: a method's win)
    trial_seeds: [0, 1, 2]              # DomainBed's trial seeds: the in/out split of every domain
    grid:                               # every combination of these dotted config keys, or
      model.init_args.optim.lr: [1.0e-4, 3.0e-5]
    random:                             # DomainBed-style random draws: n per (method, dataset, domain, seed)
      n: 0
      seed: 0
      space:
        model.init_args.optim.lr: {log10_uniform: [-5, -3]}
        data.init_args.batch_size_per_domain: {choice: [16, 32]}
    args: [--trainer.max_epochs, "10"]  # added to every job
    slurm: {partition: gpu, nodes: 1, gpus_per_node: 1, cpus_per_task: 8, time: "12:00:00", parallel: 16}
                                        # every job gets --trainer.num_nodes / --trainer.devices to match;
                                        # jobs that would use a GPU need gpus_per_node (or gpus, gres),
                                        # or `cpu_only: true` to run on CPUs on purpose

Before anything is queued the job count is printed with an estimate of the accelerator-hours
(`estimate`): each job's steps x the measured seconds per step of its model and method, plus its
evaluation images x the measured seconds per image (AAT's scan and GA: their search instead of
steps, its masks counted from the search's settings x the measured seconds to fill the scorer's
cache and score a mask, per image), from the step-time file that `make gpu-check` writes on a GPU
(experiments/measured/step_times.json, `experiments/bench_step_time.py`); a job whose model and
method have no measured figure is named as such, never guessed.

Each job's folder is `RUNS_DIR/<dataset>/<method>/<domain>_seed<S>_hp<I>_<hash>`, the hash of its
arguments: relaunching the same spec maps every job to the same folder, where a `done` file
makes it a no-op and checkpoints make it resume (`--ckpt_path last`). TensorBoard logs go to
`<job folder>/version_0` (a fixed version, so a requeued task logs into the same place).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from dg_heads.data.registry import get_dataset
from dg_heads.data.splits import seed_hash
from dg_heads.errors import ConfigError, DGHeadsError, parser_error

SBATCH = Path(__file__).resolve().parent / "slurm" / "array.sbatch"  # package data (pip install . ships it)
DONE = "done"


@dataclass
class Job:
    method: str
    dataset: str
    test_domain: str
    trial_seed: int
    hparams_index: int
    hparams: dict
    configs: list[str]
    extra_args: list[str]
    run_dir: Path = Path()
    subcommand: str = "fit"

    def identity(self) -> dict:
        identity = {"method": self.method, "dataset": self.dataset, "test_domain": self.test_domain,
                    "trial_seed": self.trial_seed, "hparams_index": self.hparams_index, "hparams": self.hparams,
                    "configs": self.configs, "args": self.extra_args}
        if self.subcommand != "fit":  # only then: a `fit` job keeps the folder (hash) it had before
            identity["subcommand"] = self.subcommand
        return identity

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]

    def argv(self, command: str = "lightning") -> list[str]:
        seed = seed_hash(self.dataset, self.method, self.test_domain, self.hparams_index, self.trial_seed)
        argv = [command, self.subcommand]
        for config in self.configs:  # absolute: a job may start in any folder
            argv += ["--config", str(Path(config).resolve())]
        argv += ["--seed_everything", str(seed),
                 "--data.init_args.dataset", self.dataset,  # the spec's, whatever the config file says
                 "--data.init_args.test_domains", json.dumps([self.test_domain]),
                 "--data.init_args.trial_seed", str(self.trial_seed)]
        for key, value in self.hparams.items():
            argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        argv += self.extra_args
        run = str(self.run_dir)
        argv += ["--trainer.default_root_dir", run,
                 "--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger",
                 "--trainer.logger.init_args.save_dir", run, "--trainer.logger.init_args.name", "",
                 "--trainer.logger.init_args.version", "0"]
        if self.subcommand == "fit":  # test the checkpoint validation chose; resume from the last one
            argv += ["--test_after_fit", "true", "--ckpt_path", "last"]
        argv += ["--done_marker", str(self.run_dir / DONE)]
        return argv


@dataclass
class SweepSpec:
    methods: dict[str, dict]
    datasets: dict[str, list[str]]
    configs: list[str] = field(default_factory=list)
    trial_seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list] = field(default_factory=dict)
    random: dict = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    runs_dir: str = "runs/sweep"
    slurm: dict = field(default_factory=dict)
    name: str = "dg-heads"
    dataset_args: dict[str, list[str]] = field(default_factory=dict)  # from `datasets: {name: {args: ...}}`


SUBCOMMANDS = ("fit", "test")


def load_spec(path: Path) -> SweepSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DGHeadsError(f"cannot read sweep spec {path}: {error}") from None
    if not isinstance(raw, dict):
        raise DGHeadsError(f"sweep spec {path}: expected a mapping with methods, datasets, ...")
    known = set(SweepSpec.__dataclass_fields__) - {"dataset_args"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DGHeadsError(f"sweep spec {path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    for required in ("methods", "datasets"):
        if not raw.get(required):
            raise DGHeadsError(f"sweep spec {path}: `{required}` is required and may not be empty")
    if not isinstance(raw.get("configs", []), list):
        raise DGHeadsError(f"sweep spec {path}: `configs` must be a list of config files, got {raw['configs']!r}")
    methods = {}
    for name, value in raw["methods"].items():
        value = {"configs": value} if isinstance(value, list) else dict(value or {})
        value["configs"] = value.get("configs") or raw.get("configs")
        if not value["configs"]:
            raise DGHeadsError(f"sweep spec {path}: method {name!r} needs a list of config files "
                               f"(its own `configs`, or the spec's `configs` for every method)")
        if value.get("subcommand", "fit") not in SUBCOMMANDS:
            raise DGHeadsError(f"sweep spec {path}: methods.{name}.subcommand {value['subcommand']!r}: expected one "
                               f"of {list(SUBCOMMANDS)} (`test`: nothing trains, the held-out domain is scored)")
        methods[name] = value
    datasets, dataset_args = {}, {}
    for given, domains in raw["datasets"].items():
        info = get_dataset(given)  # DomainBed's names (`OfficeHome`) too; jobs get the registry's
        name = info.name
        if name in datasets:
            raise DGHeadsError(f"sweep spec {path}: datasets names {name} twice ({given!r} is another name for it)")
        if isinstance(domains, dict):  # {domains: ..., args: [...]}
            extra = sorted(set(domains) - {"domains", "args"})
            args = domains.get("args") or []
            if extra or not isinstance(args, list):
                raise DGHeadsError(f"sweep spec {path}: datasets.{given}: expected a list of test domains, `all`, or "
                                   f"a mapping with `domains` and `args` (a list of arguments), got {domains!r}")
            dataset_args[name] = [str(a) for a in args]
            domains = domains.get("domains", "all")
        domains = list(info.domains) if domains in ("all", None) else [str(d) for d in domains]
        bad = [d for d in domains if d not in info.domains]
        if bad:
            raise DGHeadsError(
                f"sweep spec {path}: {name} has no domain(s) {bad}; its domains are {list(info.domains)}")
        datasets[name] = domains
    for name, value in methods.items():  # a method's own `datasets`: some of the spec's, by any of their names
        if "datasets" in value:
            given = value["datasets"] if isinstance(value["datasets"], list) else [value["datasets"]]
            value["datasets"] = [get_dataset(str(d)).name for d in given]
            outside = [d for d, n in zip(given, value["datasets"]) if n not in datasets]
            if outside:
                raise DGHeadsError(f"sweep spec {path}: methods.{name}.datasets names {outside}, not among the "
                                   f"spec's datasets {list(datasets)}")
    return SweepSpec(**{**raw, "methods": methods, "datasets": datasets, "dataset_args": dataset_args})


def _draw(space: dict, rng: np.random.RandomState) -> dict:
    """One DomainBed-style random draw of every hyper-parameter in `space`.

    The syntax (`{log10_uniform: [-5, -3]}`, `{uniform: [a, b]}`, `{choice: [...]}`) is DomainBed's
    hparams_registry draws (`10**r.uniform(-5, -3)`, `r.choice(...)`) written as YAML. It stays its
    own: the project's other value syntaxes (config values, the grid's lists) name values, not
    distributions, and neither jsonargparse nor Lightning has one for ranges to align with."""
    out = {}
    for key, dist in space.items():
        (kind, arg), = dist.items()
        if kind == "log10_uniform":
            out[key] = float(10 ** rng.uniform(*arg))
        elif kind == "uniform":
            out[key] = float(rng.uniform(*arg))
        elif kind == "choice":
            out[key] = arg[rng.randint(len(arg))]
        else:
            raise DGHeadsError(
                f"random.space.{key}: unknown distribution {kind!r}; use log10_uniform, uniform or choice")
    return out


def hparam_settings(spec: SweepSpec, method: dict, trial_seed: int) -> list[dict]:
    """The grid's combinations (a method's own `grid` replaces the spec's), or `random.n` draws
    seeded by (random.seed, index, trial_seed) as DomainBed."""
    grid = method["grid"] if "grid" in method else spec.grid
    if spec.random.get("n"):
        return [_draw(spec.random.get("space", {}), np.random.RandomState(
            seed_hash(spec.random.get("seed", 0), index, trial_seed))) for index in range(spec.random["n"])]
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]


def _gpu_count(value, key: str) -> int:
    count = str(value).rsplit(":", 1)[-1]  # `4` or `a100:4`
    if not count.isdigit():
        raise DGHeadsError(f"sweep: slurm.{key} {value!r} is not a GPU count (`4` or `type:4`)")
    return int(count)


def gpus_per_node(slurm: dict) -> int:
    """GPUs each node of an array task asks for: `gpus_per_node`, `gres: gpu[:type]:N`, or `gpus`
    (per task) spread over `nodes`; 0 when none is asked for."""
    if slurm.get("gpus_per_node"):
        return _gpu_count(slurm["gpus_per_node"], "gpus_per_node")
    gres = [g.strip() for g in str(slurm.get("gres") or "").split(",") if g.strip().startswith("gpu")]
    if gres:
        return _gpu_count(gres[0], "gres") if ":" in gres[0] else 1
    if slurm.get("gpus"):
        total, nodes = _gpu_count(slurm["gpus"], "gpus"), int(slurm.get("nodes", 1))
        if total % nodes:
            raise DGHeadsError(f"sweep: slurm.gpus {total} does not split evenly over {nodes} nodes")
        return total // nodes
    return 0


def slurm_layout(spec: SweepSpec) -> tuple[int, int]:
    """(nodes, processes per node) of every array task: `srun` starts one process per device."""
    tasks = spec.slurm.get("ntasks_per_node", gpus_per_node(spec.slurm) or 1)
    return int(spec.slurm.get("nodes", 1)), int(tasks)


def layout_args(spec: SweepSpec, args: list[str], where: str) -> list[str]:
    """`--trainer.num_nodes` and `--trainer.devices` matching the SLURM layout, so that DDP spans
    every process `srun` starts; a different value given in the spec is an error now, not a
    rank mismatch at the start of every array task."""
    if not spec.slurm:
        return []
    added = []
    for key, value in zip(("--trainer.num_nodes", "--trainer.devices"), slurm_layout(spec)):
        given = [args[i + 1] for i, a in enumerate(args[:-1]) if a == key]
        if not given:
            added += [key, str(value)]
        elif given[-1] != str(value):
            raise DGHeadsError(f"sweep: {where} sets {key} {given[-1]}, but the slurm section starts {value} "
                               f"(nodes: {slurm_layout(spec)[0]}, tasks per node: {slurm_layout(spec)[1]})")
    return added


def config_files(configs: list[str], method: str, dataset: str) -> list[str]:
    """A method's config files for one dataset (`{dataset}` and `{method}` filled in), each checked
    now: a missing file would otherwise fail every array task at start, hours after submission."""
    files = [str(c).replace("{dataset}", dataset).replace("{method}", method) for c in configs]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise DGHeadsError(f"sweep: method {method!r} on {dataset}: config file(s) {missing} not found "
                           f"(relative paths are read from {Path.cwd()}, where the jobs also start)")
    return files


def slurm_asks_for_gpu(slurm: dict) -> bool:
    return gpus_per_node(slurm) > 0 or bool(slurm.get("gpus_per_task"))


def trainer_accelerator(configs: list[str], args: list[str]) -> str:
    """`trainer.accelerator` as the CLI will resolve it: the job's config files and arguments parsed
    by the CLI itself (LightningCLI's `--print_config`: parsed and printed, nothing built), so the
    composition, omegaconf interpolation and defaults are the run's own. A job that does not
    parse is an error now, not in every array task."""
    import io
    import warnings
    from contextlib import redirect_stdout

    from dg_heads.lightning_cli import DGHeadsCLI

    argv = [*(a for config in configs for a in ("--config", str(config))), *args, "--print_config"]
    printed = io.StringIO()
    try:
        with redirect_stdout(printed), warnings.catch_warnings():
            # Lightning warns when `args` is given while sys.argv holds arguments (here: the sweep's own)
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            DGHeadsCLI(args=argv, run=False)
    except SystemExit:  # `--print_config` ends the parse
        pass
    except ConfigError as error:
        raise DGHeadsError(f"sweep: the job's configs {configs} with arguments {args} do not parse: "
                           f"{str(error).removeprefix('error: ')}") from None
    return str((yaml.safe_load(printed.getvalue()) or {}).get("trainer", {}).get("accelerator", "auto"))


def check_gpu_request(spec: SweepSpec, method: dict, configs: list[str], args: list[str], where: str) -> None:
    """Jobs that would use a GPU need the SLURM section to ask for one: without it the tasks
    land on nodes (or in cgroups) without a GPU, and `accelerator: auto` quietly trains on the
    CPU for hours. `slurm.cpu_only: true` says CPU on purpose (and then asks for no GPU)."""
    if spec.slurm.get("cpu_only"):
        if slurm_asks_for_gpu(spec.slurm):
            raise DGHeadsError("sweep: slurm.cpu_only is true but the slurm section also asks for GPUs; "
                               "drop one of them")
        return
    if slurm_asks_for_gpu(spec.slurm):
        return
    accelerators = {trainer_accelerator(configs, args)}
    grid = method["grid"] if "grid" in method else spec.grid
    accelerators |= {str(v) for v in grid.get("trainer.accelerator", [])}
    accelerators |= {str(v) for v in spec.random.get("space", {}).get("trainer.accelerator", {}).get("choice", [])}
    wanting = sorted(a for a in accelerators if a != "cpu")
    if wanting:
        raise DGHeadsError(
            f"sweep: {where} runs with trainer.accelerator {wanting[0]} (a GPU wherever there is one), but "
            f"the slurm section asks for no GPU: set slurm.gpus_per_node (or gpus / gres), or "
            f"slurm.cpu_only: true to run on CPUs on purpose"
        )


def jobs_of(spec: SweepSpec, runs_dir: Path) -> list[Job]:
    jobs = []
    for method, mspec in spec.methods.items():
        subcommand = mspec.get("subcommand", "fit")
        for dataset, domains in spec.datasets.items():
            if dataset not in mspec.get("datasets", spec.datasets):
                continue
            # the spec's, the dataset's (a run length), the method's (its own run length wins)
            args = [*spec.args, *spec.dataset_args.get(dataset, []), *mspec.get("args", [])]
            args += layout_args(spec, args, f"method {method!r}")
            configs = config_files(mspec["configs"], method, dataset)
            check_gpu_request(spec, mspec, configs, args, f"method {method!r} on {dataset}")
            for domain in domains:
                for seed in spec.trial_seeds:
                    for index, hparams in enumerate(hparam_settings(spec, mspec, seed)):
                        job = Job(method, dataset, domain, int(seed), index, hparams, list(configs), list(args),
                                  subcommand=subcommand)
                        folder = f"{domain.replace(' ', '_')}_seed{seed}_hp{index}_{job.key}"
                        job.run_dir = runs_dir / dataset / method / folder
                        jobs.append(job)
    return jobs


# ----------------------------------------------------------- accelerator-hours before queuing
STEP_TIMES = Path("experiments") / "measured" / "step_times.json"
GPU_CHECK = "run `make gpu-check` on a GPU node"


def step_times_path(given: Path | None = None) -> Path:
    """`--step-times`, else experiments/measured/step_times.json in this folder (where the jobs
    start), else the repository's (what `make gpu-check` wrote)."""
    if given is not None:
        return given
    here = Path.cwd() / STEP_TIMES
    return here if here.is_file() else Path(__file__).resolve().parents[1] / STEP_TIMES


def load_step_times(path: Path) -> list[dict]:
    """The measured entries (`experiments/bench_step_time.py` writes them); none when the file is absent."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DGHeadsError(f"cannot read the step-time file {path}: {error}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DGHeadsError(f"step-time file {path}: expected {{\"entries\": [{{...}}, ...]}} "
                           f"(as experiments/bench_step_time.py writes it)")
    return entries


def _latest(entries: list[dict], **match) -> list[dict]:
    found = [e for e in entries if all(str(e.get(k)) == str(v) for k, v in match.items())]
    return sorted(found, key=lambda e: str(e.get("date", "")), reverse=True)


@dataclass
class JobCost:
    """One job's estimate: `seconds` (on one accelerator), or why none (`missing`)."""

    seconds: float | None = None
    missing: str | None = None
    detail: str = ""
    devices: set = field(default_factory=set)


def job_cost(job: Job, entries: list[dict], processes: int = 1) -> JobCost:
    """Seconds of one job, each of its `processes` busy throughout (its accelerator-seconds: that x
    `processes`): training steps x the measured seconds per step of its model and method (scaled
    from the measured images per step to the job's, 3 or 5 source domains x batch_size_per_domain;
    every process takes a batch of its own), plus the images it evaluates x the measured seconds per
    image, shared out over the processes: every validation of the source `out` splits (steps /
    val_check_interval, and once more for the selected checkpoint) and the held-out domain's test.
    A `test` job: the test alone. AAT's training-free searches (scan, GA): `search_seconds`, then
    the searched model's validation and test."""
    from dg_heads.preflight import config_value

    args = [a for k, v in job.hparams.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]
    args += job.extra_args

    def value(key: str, default=None):
        return config_value(job.configs, args, key, default)

    model, precision = value("model.init_args.clip.model_name"), str(value("trainer.precision", "32-true"))
    what = f"{model}/{job.method} ({precision})"
    info = get_dataset(job.dataset)
    if not info.counts:
        return JobCost(missing=f"{job.dataset}: no image counts in the registry to size its evaluation")
    sources = [d for d in info.domains if d != job.test_domain]
    test_images = info.counts[job.test_domain]
    holdout = float(value("data.init_args.holdout_fraction", 0.2))
    val_images = holdout * sum(info.counts[d] for d in sources)
    evals = _latest(entries, kind="eval", model=model, precision=precision)
    no_eval = JobCost(missing=f"no measured evaluation time for {model} ({precision}) on a GPU yet")
    per_image = float(evals[0]["s_per_image"]) if evals else 0.0
    devices = {evals[0].get("device", "?")} if evals else set()
    if job.subcommand == "test":
        if not evals:
            return no_eval
        return JobCost(test_images * per_image / processes, devices=devices,
                       detail=f"{test_images:,} images x {per_image * 1e3:.2f} ms")
    strategy = value("model.init_args.search.strategy")
    if strategy is None and str(value("model.class_path", "")).endswith("AttentionAblation"):
        strategy = "ga"  # SearchSpec's default
    if strategy in ("scan", "ga"):  # AAT: a search, no training steps
        scoring = [min(int(info.counts[d] * holdout), _scoring_limit(value)) for d in sources]
        search = search_seconds(strategy, value, scoring, model, precision, job.method, entries, processes)
        if search.missing:
            return search
        if not evals:
            return no_eval
        eval_images = val_images + test_images  # the searched model's validation, then its test
        return JobCost(search.seconds + eval_images * per_image / processes, devices=devices | search.devices,
                       detail=f"search {search.detail} + {eval_images:,.0f} images x {per_image * 1e3:.2f} ms")
    steps = value("trainer.max_steps", -1)
    if not isinstance(steps, int) or steps <= 0:
        return JobCost(missing=f"{job.method} on {job.dataset} runs by epochs (trainer.max_steps {steps}): "
                               f"no step count to estimate from")
    images = int(value("data.init_args.batch_size_per_domain", 32)) * len(sources)
    trains = _latest(entries, kind="train_step", model=model, method=job.method, precision=precision)
    if not trains:
        return JobCost(missing=f"no measured step time for {what} on a GPU yet")
    if not evals:
        return no_eval
    nearest = min(trains, key=lambda e: abs(int(e["images_per_step"]) - images))  # the latest among equals
    per_step = float(nearest["s_per_step"]) * images / int(nearest["images_per_step"])
    interval = value("trainer.val_check_interval")
    validations = steps // interval if isinstance(interval, int) and interval > 0 else 1
    eval_images = (validations + 1) * val_images + test_images
    return JobCost(steps * per_step + eval_images * per_image / processes,
                   devices=devices | {nearest.get("device", "?")},
                   detail=f"{steps} steps x {per_step:.3f} s at {images} images/step + "
                          f"{eval_images:,.0f} images x {per_image * 1e3:.2f} ms")


def _scoring_limit(value) -> float:
    """A source domain's scoring images at most: max_scoring_batches x eval_batch_size (null: all)."""
    batches = value("model.init_args.search.max_scoring_batches", 4)
    return float("inf") if batches is None else int(batches) * int(value("data.init_args.eval_batch_size", 128))


def search_seconds(strategy: str, value, scoring: list[int], model: str, precision: str, method: str,
                   entries: list[dict], processes: int = 1) -> JobCost:
    """One AAT search (scan or GA) over `scoring` images per source domain, shared out over
    `processes`: the cache filled once, then its masks scored, from the model's measured `search`
    entry (experiments/bench_step_time.py, per image: `s_fill_per_image`; one mask running every
    block, `s_score_per_image`, or none, `s_score_overhead_per_image`). The masks and blocks they
    run come from the search's settings and the cache the job plans within its cache_budget_gb
    (`scorer.search_cost`, `scorer.plan_cache`): a mask running `k` of the `blocks` blocks costs
    overhead + k / blocks x (score - overhead). Scan: exact; GA: at most (every mask after the
    unablated one taken as new and as ablating a head of block 0). An older file's hand-written
    `search` entry of the method (`s_per_search`) is read as it says."""
    measured = [e for e in _latest(entries, kind="search", model=model, precision=precision)
                if "s_fill_per_image" in e]
    if not measured:
        legacy = [e for e in _latest(entries, kind="search", model=model, method=method, precision=precision)
                  if "s_per_search" in e]
        if legacy:
            seconds = float(legacy[0]["s_per_search"])
            return JobCost(seconds, devices={legacy[0].get("device", "?")},
                           detail=f"{seconds / 60:.1f} min (the file's s_per_search)")
        return JobCost(missing=f"no measured search time for {model} ({precision}) on a GPU yet")
    if value("model.init_args.mask"):
        return JobCost(0.0, detail="none (a given mask)")  # applied as is: nothing is searched
    from dg_heads.methods.aat.genetic import GASpec
    from dg_heads.methods.aat.scorer import GB, plan_cache, search_cost

    entry = measured[0]
    blocks, heads = int(entry["blocks"]), int(entry["heads"])
    images = sum(scoring)
    share = -(-images // processes)  # the largest process's share, as the job plans its cache
    budget = float(value("model.init_args.search.cache_budget_gb", 4.0))
    plan = plan_cache(blocks, share * int(entry["level_bytes_per_image"]), budget * GB)
    if plan is None:
        return JobCost(missing=f"{model}/{method}: its search's cache would not fit in cache_budget_gb {budget} "
                               f"(the job stops with an error at its start)")
    ga = GASpec()
    for key in ("population", "generations", "elitism"):
        setattr(ga, key, int(value(f"model.init_args.search.ga.{key}", getattr(ga, key))))
    cost = search_cost(strategy, blocks, heads, ga, plan.levels)
    fill, score = float(entry["s_fill_per_image"]), float(entry["s_score_per_image"])
    overhead = float(entry["s_score_overhead_per_image"])
    per_image = fill + cost.masks * overhead + cost.block_runs * (score - overhead) / blocks
    at_most = "" if cost.exact else "at most "
    return JobCost(images * per_image / processes, devices={entry.get("device", "?")},
                   detail=f"{images:,} images x ({fill * 1e3:.2f} ms cache fill + {at_most}{cost.masks} masks "
                          f"{(per_image - fill) * 1e3:.1f} ms)")


def estimate(spec: SweepSpec, jobs: list[Job], entries: list[dict], source: Path) -> list[str]:
    """The lines `dg-heads sweep` prints before queuing: accelerator-hours per (method, dataset) and
    in all (a job's seconds x the processes it runs, nodes x tasks per node), and every (model,
    method) without a measured figure, named, never guessed."""
    processes = slurm_layout(spec)[0] * slurm_layout(spec)[1] if spec.slurm else 1
    groups: dict[tuple[str, str], list[JobCost]] = {}
    for job in jobs:
        groups.setdefault((job.method, job.dataset), []).append(job_cost(job, entries, processes))
    lines, missing, total, counted, devices = [], {}, 0.0, 0, set()
    for (method, dataset), costs in groups.items():
        known = [c for c in costs if c.seconds is not None]
        for cost in costs:
            if cost.missing:
                missing[cost.missing] = missing.get(cost.missing, 0) + 1
        if known:
            hours = sum(c.seconds for c in known) * processes / 3600
            total, counted = total + hours, counted + len(known)
            devices |= {d for c in known for d in c.devices}
            lines.append(f"  {method:<18} {dataset:<16} {len(known):>4} jobs x {hours / len(known):7.2f} h = "
                         f"{hours:8.1f} h  (first job: {known[0].detail})")
    head = (f"estimate: {total:.1f} accelerator-hours for {counted} of the {len(jobs)} jobs to run"
            + (f" ({processes} processes each)" if processes > 1 else "")
            + f", from the step times measured on {', '.join(sorted(devices))} in {source}" if counted else
            f"estimate: none of the {len(jobs)} jobs to run has a measured step time"
            + ("" if source.is_file() else f" ({source} does not exist)"))
    lines.insert(0, head)
    for reason, count in missing.items():
        hint = f": {GPU_CHECK}" if reason.startswith("no measured") else ""
        lines.append(f"  not estimated ({count} job(s)): {reason}{hint}")
    limit = _hours(spec.slurm.get("time"))
    longest = max(((c.seconds / 3600, m, d) for (m, d), costs in groups.items() for c in costs if c.seconds),
                  default=None)
    if limit and longest and longest[0] > limit:
        lines.append(f"  note: the longest job ({longest[1]} on {longest[2]}, {longest[0]:.1f} h) is longer than "
                     f"slurm.time {spec.slurm['time']}")
    return lines


def _hours(time_limit) -> float | None:
    """SLURM's `--time` (`MM`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`) in hours; None when not given or not read."""
    if not time_limit:
        return None
    text = str(time_limit)
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [int(x) for x in clock.split(":") if x.isdigit()]
    if not days.isdigit() or not parts:
        return None
    if "-" in text:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:
        hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}.get(len(parts), (0, 0, 0))
    return int(days) * 24 + hours + minutes / 60 + seconds / 3600


def job_line(job: Job, command: str | None = None) -> str:
    """A job's line of `jobs.txt`: what runs it from any folder and with any PATH: this
    interpreter's `-m dg_heads` (the venv's own CLI; a bare `lightning` may be another venv's or
    Lightning 2.4's own command, which does nothing for `fit`) or `command`, then the job's
    arguments (absolute config and run paths)."""
    prefix = shlex.split(command) if command else [sys.executable, "-m", "dg_heads"]
    return shlex.join([*prefix, *job.argv()[1:]])


def write_sweep(spec: SweepSpec, runs_dir: Path, command: str | None = None,
                jobs: list[Job] | None = None) -> tuple[Path, list[Job]]:
    """`jobs.txt` (one command per line), `sweep.json` (every job), `job.json` in each job folder."""
    jobs = jobs_of(spec, runs_dir) if jobs is None else jobs
    runs_dir.mkdir(parents=True, exist_ok=True)
    lines = [job_line(job, command) for job in jobs]
    (runs_dir / "jobs.txt").write_text("\n".join(lines) + "\n")
    for job, line in zip(jobs, lines):
        job.run_dir.mkdir(parents=True, exist_ok=True)
        (job.run_dir / "job.json").write_text(json.dumps({**job.identity(), "key": job.key, "command": line}, indent=1))
    listed = [{**job.identity(), "key": job.key, "run_dir": str(job.run_dir.relative_to(runs_dir))} for job in jobs]
    (runs_dir / "sweep.json").write_text(json.dumps({"jobs": listed}, indent=1))
    return runs_dir / "jobs.txt", jobs


def sbatch_command(spec: SweepSpec, jobs_file: Path, todo: list[int]) -> str:
    """The `sbatch` line for the jobs still to run (array indices are job-file line numbers - 1)."""
    slurm = dict(spec.slurm)
    parallel = slurm.pop("parallel", None)
    slurm.pop("cpu_only", None)
    array = _ranges(todo) + (f"%{parallel}" if parallel else "")
    options = [f"--array={array}", f"--job-name={spec.name}",
               f"--output={jobs_file.parent / 'slurm-%A_%a.out'}"]
    gpus = slurm.pop("gpus_per_node", None)
    slurm.pop("ntasks_per_node", None)
    options.append(f"--ntasks-per-node={slurm_layout(spec)[1]}")
    if gpus:
        options.append(f"--gpus-per-node={gpus}")
    options += [f"--{k.replace('_', '-')}={v}" for k, v in slurm.items()]
    return shlex.join(["sbatch", *options, str(SBATCH), str(jobs_file)])


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def check_jobs(jobs: list[Job]) -> None:
    """Parse the first job of every (method, dataset) with the CLI's own parser (`--print_config`:
    configs composed, every key and type checked, nothing built), so a typo in a grid key or an
    argument fails here, not in every array task after it waited in the queue."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from dg_heads.cli import run_lightning

    seen = set()
    for job in jobs:
        if (job.method, job.dataset) in seen:
            continue
        seen.add((job.method, job.dataset))
        err = io.StringIO()
        said = None
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(err):
                run_lightning([*job.argv()[1:], "--print_config"])
        except ConfigError as error:  # dg-heads's parser: jsonargparse's error, made one line
            said = str(error)
        except SystemExit as stop:
            if stop.code not in (0, None):
                said = parser_error(err.getvalue())
        if said is not None:
            raise DGHeadsError(f"sweep: method {job.method!r} on {job.dataset} does not parse: "
                               f"{said} (its first job: {shlex.join(job.argv())})") from None


def job_command(job: Job) -> list[str]:
    """What runs a job here: its `lightning fit ...` line through this interpreter (no PATH needed)."""
    return [sys.executable, "-m", "dg_heads", *job.argv()[1:]]


def run_local(jobs: list[Job], todo: list[int], workers: int, log=print) -> list[Job]:
    """Run the unfinished jobs on this machine, `workers` at a time, exactly as an array task
    would (same command, folder, `done` marker and `--ckpt_path last` resume); each job's output
    goes to `local.log` in its folder. Returns the jobs that failed."""
    import os
    import subprocess
    import time
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ)
    # as array.sbatch / torchrun: processes sharing the machine must not each spin a thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    failed: list[Job] = []
    finished = [0]

    def run(index: int) -> None:
        job = jobs[index]
        start = time.monotonic()
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with (job.run_dir / "local.log").open("a") as out:
            code = subprocess.call(job_command(job), stdout=out, stderr=subprocess.STDOUT, env=env)
        finished[0] += 1
        what = f"{job.method} {job.dataset} {job.test_domain} seed {job.trial_seed} hp {job.hparams_index}"
        if code == 0 and (job.run_dir / DONE).exists():
            log(f"[{finished[0]}/{len(todo)}] done   {what} ({time.monotonic() - start:.0f} s)")
        else:
            failed.append(job)
            log(f"[{finished[0]}/{len(todo)}] FAILED {what} (exit {code}): {job.run_dir / 'local.log'}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, todo))
    return failed


def submit(command: str) -> str:
    """Run the `sbatch` line; its answer (`Submitted batch job N`)."""
    import subprocess

    argv = shlex.split(command)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise DGHeadsError("sweep --launcher slurm: `sbatch` is not on PATH (no SLURM here): use "
                           "--launcher local to run the jobs on this machine, or --launcher print") from None
    if result.returncode != 0:
        raise DGHeadsError(f"sweep --launcher slurm: sbatch failed (exit {result.returncode}): "
                           f"{' '.join(result.stderr.split()) or ' '.join(result.stdout.split())}")
    return result.stdout.strip()


def sweep(spec: Path, *, runs_dir: Path | None = None, launcher: Literal["print", "local", "slurm"] = "print",
          jobs: int = 1, command: str | None = None, preflight: bool = True, check: bool = True,
          step_times: Path | None = None) -> None:
    """A sweep spec to jobs: methods x datasets x test domains x trial seeds x hyper-parameters
    become a job list (RUNS_DIR/jobs.txt), one `lightning fit ...` command per line, for a SLURM
    array (the sbatch line printed, or submitted) or run on this machine, as DomainBed's command
    launchers. The spec's format: the module docstring of `dg_heads/sweep.py`.

    Args:
        spec: the sweep spec (YAML)
        runs_dir: overrides the spec's runs_dir
        launcher: print: write jobs.txt and print the sbatch line (default); local: run the
            unfinished jobs on this machine, --jobs at a time; slurm: submit the array with sbatch
        jobs: local: how many jobs run at once
        command: the CLI each job line starts with (default: this Python's `-m dg_heads`: no venv
            on PATH needed)
        preflight: check that every dataset folder and pretrained weight the jobs need is here
            (`--no-preflight` skips it)
        check: parse one job per method and dataset with the CLI, a few seconds (`--no-check` skips it)
        step_times: the measured step times for the accelerator-hours estimate (default:
            experiments/measured/step_times.json here, else the repository's; `make gpu-check`
            writes it on a GPU)
    """
    if jobs < 1:
        raise DGHeadsError(f"sweep --jobs {jobs}: expected a number of jobs >= 1")
    workers, spec = jobs, load_spec(spec)
    runs_dir = (runs_dir or Path(spec.runs_dir)).resolve()
    jobs = jobs_of(spec, runs_dir)
    if preflight:  # the datasets and weights every job needs, before anything is queued
        from dg_heads.preflight import preflight as missing

        problems = missing(jobs)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            print(f"sweep: nothing queued: {len(problems)} problem(s) (--no-preflight skips this check)",
                  file=sys.stderr)
            sys.exit(2)
    if check:  # before anything is written: a failed check leaves no job folders for `collect` to list
        check_jobs(jobs)
    jobs_file, _ = write_sweep(spec, runs_dir, command, jobs)
    todo = [i for i, job in enumerate(jobs) if not (job.run_dir / DONE).exists()]
    print(f"{len(jobs)} jobs in {jobs_file}: {len(jobs) - len(todo)} done, {len(todo)} to run "
          f"(unfinished ones resume from their checkpoints)")
    if todo:
        source = step_times_path(step_times)
        print("\n".join(estimate(spec, [jobs[i] for i in todo], load_step_times(source), source)))
    sys.stdout.flush()
    if not todo:
        return
    if launcher == "print":
        print(sbatch_command(spec, jobs_file, todo))
    elif launcher == "slurm":
        print(submit(sbatch_command(spec, jobs_file, todo)))
    else:
        print(f"running {len(todo)} job(s) here, {workers} at a time; each one's output: <job folder>/local.log",
              flush=True)
        failed = run_local(jobs, todo, workers, log=lambda line: print(line, flush=True))
        if failed:
            print(f"{len(failed)} of {len(todo)} job(s) failed; run the same command again to retry "
                  f"them (finished ones are skipped, interrupted ones resume)", flush=True)
            sys.exit(1)
        print(f"all {len(todo)} job(s) done; tables: dg-heads collect {runs_dir}", flush=True)
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    """`dg-heads sweep ARGS`."""
    from dg_heads.cli import run_tool

    run_tool(sweep, argv, "dg-heads sweep")
