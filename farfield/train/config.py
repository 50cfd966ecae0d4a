"""Typed training configuration: ``TrainConfig`` = data + model + task + optim + run sections.

Every section is a frozen dataclass validated on construction; :meth:`TrainConfig.from_dict` rejects
unknown keys (naming them and the allowed ones) and :func:`apply_overrides` applies ``key=value`` strings
with dotted keys (``optim.lr=1e-3``, ``model.long_range=ewald``), values parsed as YAML scalars.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from farfield._config import check_keys
from farfield.errors import ConfigError
from farfield.models.config import ModelConfig
from farfield.models.readout import TASK_POOLINGS

__all__ = ["DataConfig", "TaskConfig", "TASK_METRICS", "POOLINGS", "DEFAULT_POOLING", "resolve_task", "OptimConfig",
           "RunConfig", "PRECISIONS", "TrainConfig", "TASKS", "apply_overrides", "load_config"]

TASKS = ("graph_regression", "node_regression", "binary", "multiclass", "multilabel")
SCHEDULERS = ("plateau", "cosine", "none")


def _choice(what, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {list(allowed)}, got {value!r}")


def _integer(what, value, minimum=0):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _boolean(what, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, got {value!r}")


def _string(what, value, optional=False):
    if not (isinstance(value, str) or (optional and value is None)):
        raise ConfigError(f"{what} must be a string, got {value!r}")


def _positive(what, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


#: where edges rebuilt during training are computed (:class:`DataConfig`)
EDGES_ON = ("auto", "loader", "device")


@dataclass(frozen=True)
class DataConfig:
    """``dataset``: a name in :data:`farfield.datasets.DATASETS`; ``path`` its file (default: the shipped one);
    ``target``: which target of the dataset (None: the dataset's default, e.g. ``energy`` for
    ``peptide_electrostatics``, every label for the LRGB sets); ``options``: further loader options (e.g.
    ``{lap_pe: 10, rwse: 16}`` for LRGB);
    ``edges``: the local edge spec (long-range strategies extend it); ``split``: train / val / test fractions,
    drawn with ``split_seed`` (fixed across run seeds so that runs are paired); ``batch_size`` graphs and at most
    ``max_atoms`` atoms per batch; ``limit``: use only the first N samples (0 = all); ``edges_on``: where edges
    that change during training (random long-range edges redrawn per epoch, edges on Noisy Nodes' noisy
    positions, on corrupted pretraining structures) are built: ``loader`` (the host, in the data loader's
    workers, scipy cKDTree), ``device`` (torch kernels on the batch's device after transfer, no host round trip)
    or ``auto`` (default: ``device`` when training on an accelerator, else ``loader``); the edge sets are
    identical (:class:`farfield.graphs.GraphBuilder`), so this is not part of a run's key."""

    dataset: str = "peptide_electrostatics"
    path: str | None = None
    target: str | None = None
    hydrogens: bool = False
    edges: str = "radius:5.0"
    split: tuple = (0.8, 0.1, 0.1)
    split_seed: int = 0
    batch_size: int = 16
    max_atoms: int = 4000
    limit: int = 0
    num_workers: int = 0
    options: dict = field(default_factory=dict)
    edges_on: str = "auto"

    def __post_init__(self):
        from farfield.datasets import DATASETS
        from farfield.graphs import parse_edge_spec
        _choice("data.dataset", self.dataset, DATASETS)
        _string("data.path", self.path, optional=True)
        _string("data.target", self.target, optional=True)
        _string("data.edges", self.edges)
        _boolean("data.hydrogens", self.hydrogens)
        parse_edge_spec(self.edges)
        sp = tuple(self.split)
        if len(sp) != 3 or any(not isinstance(x, (int, float)) or x < 0 for x in sp) or abs(sum(sp) - 1) > 1e-6 or sp[0] <= 0:
            raise ConfigError(f"data.split must be three non-negative fractions summing to 1, got {self.split!r}")
        object.__setattr__(self, "split", sp)
        _integer("data.split_seed", self.split_seed)
        _integer("data.batch_size", self.batch_size, 1)
        _integer("data.max_atoms", self.max_atoms, 1)
        _integer("data.limit", self.limit)
        _integer("data.num_workers", self.num_workers)
        _choice("data.edges_on", self.edges_on, EDGES_ON)
        if not isinstance(self.options, dict):
            raise ConfigError(f"data.options must be a mapping of loader options, got {self.options!r}")


#: metric names a task kind reports (the first is the default monitor) and whether higher is better
TASK_METRICS = {
    "graph_regression": {"mae": False, "rmse": False, "pearson": True, "spearman": True, "group_spearman": True},
    "node_regression": {"mae": False, "rmse": False, "pearson": True, "spearman": True},
    "binary": {"auroc": True, "acc": True},
    "multiclass": {"acc": True},
    "multilabel": {"ap": True, "fmax": True, "aupr": True, "f1": True},
}
#: legacy task names in loaders' ``info`` (LRGB's ``"regression"``)
_TASK_ALIASES = {"regression": "graph_regression"}


@dataclass(frozen=True)
class TaskConfig:
    """``kind``: one of :data:`TASKS`, or ``auto`` (default): the task the dataset's loader defines in
    ``info["task"]`` (:func:`farfield.datasets.dataset_info`), else ``graph_regression``; ``num_outputs``
    targets / classes (None: the dataset's, else the width of the loaded targets; an explicit value that
    contradicts the loaded targets is a :class:`ConfigError` at training time); ``standardize`` regression
    targets with the training mean and std; ``monitor``: the validation metric that selects the best checkpoint
    (None: the dataset's ``info["task"]["monitor"]``, else the kind's default, e.g. ``mae`` or ``ap``).

    ``pooling``: the readout of graph tasks, ``sum``, ``mean``, ``max`` or ``gigp``, or ``auto`` (default): the
    dataset's natural readout, ``info["task"]["pooling"]`` (per target where the loader gives
    ``info["task"]["pooling_by_target"]``), else :data:`DEFAULT_POOLING` (``mean``). Sum pooling makes the output
    scale with the number of nodes, which suits *extensive* targets (energies of molecules: QM9's U0, the
    peptide benchmark's ``energy``) and breaks *intensive* ones (per-protein scores, function labels): a
    residue-level model of proteins of 20 to 1,300 residues then predicts values 65x apart for the same
    per-residue signal. So a dataset says ``sum`` only where its target is extensive; everything else,
    including your own ``folder`` data, gets ``mean``. ``gigp`` (never chosen by ``auto``): group invariant global
    pooling (Bujel et al. 2023; :class:`farfield.models.readout.GIGP`), a sum over radial shells about each graph's
    centroid, each shell's sum passed through a learnt network: sum pooling at initialisation (so, like ``sum``,
    growing with the number of nodes), E(3)-invariant, for backbones that read coordinates (``pos``) only.

    ``noisy_nodes`` (lambda, 0 = off) and ``noise_std`` (sigma, Angstrom): Noisy Nodes (Godwin et al., ICLR
    2022): training inputs get positions ``x + sigma * eps``, ``eps ~ N(0, I)``, and an equivariant node head
    predicts ``eps``; loss = main loss + lambda * MSE(eps_hat, eps). sigma 0.02 A is the paper's QM9 value.

    ``head_layers``: linear layers of the task head MLP (:class:`farfield.train.module.TaskModule`): 2 (default)
    is ``d -> d -> num_outputs``, 3 is ``d -> d -> d -> num_outputs`` (the three post-message-passing layers of
    the tuned LRGB baselines, Toenshoff et al. 2023), 1 a linear readout; parameters:
    :func:`farfield.train.module.head_parameter_count`.

    A config keeps what the user asked for (``auto`` / None) in :meth:`TrainConfig.to_dict`; the attributes
    hold the values resolved against ``data.dataset`` (see :meth:`TrainConfig.__post_init__`)."""

    kind: str = "auto"
    num_outputs: int | None = None
    pooling: str = "auto"
    standardize: bool = True
    monitor: str | None = None
    noisy_nodes: float = 0.0
    noise_std: float = 0.02
    head_layers: int = 2

    def __post_init__(self):
        _choice("task.kind", self.kind, TASKS + ("auto",))
        _choice("task.pooling", self.pooling, TASK_POOLINGS + ("auto",))
        if self.num_outputs is not None:
            _integer("task.num_outputs", self.num_outputs, 1)
        _boolean("task.standardize", self.standardize)
        _positive("task.noisy_nodes", self.noisy_nodes, allow_zero=True)
        _positive("task.noise_std", self.noise_std)
        _string("task.monitor", self.monitor, optional=True)
        _integer("task.head_layers", self.head_layers, 1)
        if self.monitor is not None and self.kind != "auto" and self.monitor not in TASK_METRICS[self.kind]:
            raise ConfigError(f"task.monitor must be one of {list(TASK_METRICS[self.kind])} for task.kind="
                              f"{self.kind}, got {self.monitor!r}")
        if not hasattr(self, "_requested"):
            object.__setattr__(self, "_requested", {k: getattr(self, k) for k in _AUTO_KEYS})

    def evolve(self, **changes) -> "TaskConfig":
        """This config with ``changes``, keeping what the user asked for (``auto`` / None) so that the result
        still resolves against its dataset (``dataclasses.replace`` would record the resolved values)."""
        out = replace(self, **changes)
        object.__setattr__(out, "_requested", {**self._requested,
                                               **{k: v for k, v in changes.items() if k in _AUTO_KEYS}})
        return out

    @property
    def requested(self) -> dict:
        """The values of ``kind`` / ``num_outputs`` / ``monitor`` / ``pooling`` as the user gave them (``auto`` /
        None)."""
        return dict(self._requested)

    def resolve(self, info: dict | None = None, default_target: bool = True, targets: list | None = None,
                dataset: str = "the dataset") -> "TaskConfig":
        """This config with ``kind`` / ``num_outputs`` / ``monitor`` / ``pooling`` filled from a loader's
        ``info`` (its ``task`` entry: ``{"kind", "num_outputs", "monitor", "pooling", "pooling_by_target"}``,
        or a kind name with ``num_outputs`` beside it). The dataset's ``num_outputs`` applies to its default
        target only (``default_target``); ``targets`` (the target names asked for; None: the default one) pick
        the pooling of ``pooling_by_target`` (:func:`_dataset_pooling`)."""
        req = self._requested
        t = (info or {}).get("task")
        if isinstance(t, str):
            t = {"kind": t, "num_outputs": (info or {}).get("num_outputs")}
        t = dict(t or {})
        d_kind = _TASK_ALIASES.get(t.get("kind"), t.get("kind"))
        if d_kind is not None and d_kind not in TASKS:
            raise ConfigError(f"the dataset's info names task kind {t.get('kind')!r}, not one of {list(TASKS)}")
        kind = req["kind"] if req["kind"] != "auto" else (d_kind or "graph_regression")
        same = d_kind == kind
        d_out = t.get("num_outputs") if same and default_target else None
        n = req["num_outputs"]
        # an explicit value wins here (a user's file may define another number of classes than the dataset's
        # published one); the trainer checks it against the targets' width once the data is loaded
        n = n if n is not None else int(d_out) if d_out is not None else 1
        monitor = req["monitor"] if req["monitor"] is not None else (t.get("monitor") if same else None)
        if monitor is not None and monitor not in TASK_METRICS[kind]:
            raise ConfigError(f"task.monitor must be one of {list(TASK_METRICS[kind])} for task.kind={kind}, got "
                              f"{monitor!r}")
        pooling = req["pooling"] if req["pooling"] != "auto" else _dataset_pooling(t, targets, dataset)
        out = replace(self, kind=kind, num_outputs=n, monitor=monitor, pooling=pooling)
        object.__setattr__(out, "_requested", dict(req))
        return out


_AUTO_KEYS = ("kind", "num_outputs", "monitor", "pooling")
#: graph readouts (:func:`farfield.models.readout.pool`)
POOLINGS = ("sum", "mean", "max")
#: the readout of ``task.pooling=auto`` when the dataset names none: the mean, right for intensive targets
#: (per-structure scores, class labels) whatever the graph sizes; sum only where a dataset says its target is
#: extensive
DEFAULT_POOLING = "mean"


def _dataset_pooling(task_info: dict, targets: list | None, dataset: str) -> str:
    """The readout a dataset's ``info["task"]`` gives: ``pooling_by_target[t]`` when every target asked for
    (``targets``; None: the default) has one and they agree, else ``pooling``, else :data:`DEFAULT_POOLING`.
    (Several targets with different readouts share one head, pooled one way: the dataset's ``pooling``.)"""
    by_target = task_info.get("pooling_by_target") or {}
    chosen = {by_target.get(t) for t in targets} if targets and by_target else {None}
    pooling = chosen.pop() if len(chosen) == 1 and None not in chosen else task_info.get("pooling")
    pooling = pooling or DEFAULT_POOLING
    if pooling not in POOLINGS:
        raise ConfigError(f"the info of {dataset!r} names task pooling {pooling!r}, not one of {list(POOLINGS)}")
    return pooling


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (``lr``, ``weight_decay``) for ``epochs`` epochs; ``scheduler`` ``plateau`` (halve the rate after 5
    epochs without improvement of the monitored metric), ``cosine`` (to 0 over ``epochs``) or ``none``;
    ``patience``: early stopping in epochs (0 = off); ``grad_clip``: gradient-norm clipping (0 = off).

    ``warmup_epochs`` (0 = none, the default): a linear warm-up of the learning rate, stepped per epoch, before
    ``cosine`` (then a cosine to 0 over the remaining ``epochs - warmup_epochs``) or ``none`` (then constant):
    epoch ``e < warmup_epochs`` runs at ``lr * max(1e-6, e / warmup_epochs)``, the ``cosine_with_warmup`` of
    GraphGPS (Rampasek et al. 2022) used by the tuned LRGB baselines (Toenshoff et al. 2023, 5 epochs). Not
    available with ``plateau``.

    ``backbone_lr`` (None: ``lr``): the learning rate of the model's parameters (backbone, long-range module,
    canonicaliser) when it differs from the head's, e.g. a smaller one when fine-tuning from ``model.init``."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 50
    scheduler: str = "plateau"
    patience: int = 0              # early stopping patience in epochs (0 = off)
    grad_clip: float = 10.0
    warmup_epochs: int = 0
    backbone_lr: float | None = None

    def __post_init__(self):
        _positive("optim.lr", self.lr)
        if self.backbone_lr is not None:
            _positive("optim.backbone_lr", self.backbone_lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _integer("optim.epochs", self.epochs, 1)
        _integer("optim.patience", self.patience)
        _positive("optim.grad_clip", self.grad_clip, allow_zero=True)
        _choice("optim.scheduler", self.scheduler, SCHEDULERS)
        _integer("optim.warmup_epochs", self.warmup_epochs)
        if self.warmup_epochs and self.scheduler == "plateau":
            raise ConfigError(f"optim.warmup_epochs={self.warmup_epochs} needs optim.scheduler cosine or none "
                              "(a warm-up is not combined with the plateau schedule)")


#: values of ``run.precision`` (Lightning's precision plugins): full float32, or bfloat16 autocast
PRECISIONS = ("32", "bf16-mixed")


@dataclass(frozen=True)
class RunConfig:
    """``seed``; ``out``: the run directory; ``devices`` / ``strategy`` / ``accelerator``: Lightning's.

    ``precision``: ``"32"`` (default, float32 throughout) or ``"bf16-mixed"`` (Lightning's bfloat16 autocast,
    Kalamkar et al. 2019 "A Study of BFLOAT16 for Deep Learning Training": matrix products and convolutions in
    bfloat16, parameters, optimiser state, reductions and losses in float32; the long-range sums that need
    float32, the Ewald structure factors and the latent-charge electrostatics, run with autocast off; pooling,
    losses and metrics are float32). On CUDA and on CPU. Measured on the built-in benchmark (SchNet, 50 epochs, 2
    paired seeds): test MAE 14.31 vs 14.26 in float32, difference +0.04 [-0.17, +0.26] (95% t-CI). Backbones
    whose layers are not yet autocast-safe (GVP and the TFNs: see ``tests/test_accelerator.py``, ``NO_BF16``)
    raise a dtype error under it. ``16-mixed`` (float16 with loss scaling) is not offered: float16's range (max
    65504) overflows unnormalised energies and squared distances in Angstrom^2 of large proteins.

    ``deterministic``: bit-for-bit reproducible training on the same hardware and software:
    ``torch.use_deterministic_algorithms(True)`` (Lightning's ``Trainer(deterministic=True)``) plus
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for cuBLAS on CUDA. farfield's message aggregation then takes its sorted
    segment-reduction path on accelerators (:func:`farfield.nn.aggregate.use_deterministic`) instead of atomic
    scatter-adds, whose summation order varies between runs; a PyTorch operation with no deterministic
    implementation raises instead of running. On the CPU, training is already deterministic for a fixed seed and
    thread count (no measurable cost there); the cost on a GPU is not measured yet.

    ``precision`` and ``deterministic`` are part of a run's key only when not at their defaults."""

    seed: int = 0
    out: str = "runs/train"
    devices: int = 1
    strategy: str = "auto"
    accelerator: str = "cpu"
    progress: bool = True
    tensorboard: bool = False
    precision: str = "32"
    deterministic: bool = False

    def __post_init__(self):
        _integer("run.seed", self.seed)
        _integer("run.devices", self.devices, 1)
        _string("run.out", self.out)
        _boolean("run.progress", self.progress)
        _boolean("run.tensorboard", self.tensorboard)
        _choice("run.strategy", self.strategy, ("auto", "ddp", "ddp_spawn"))
        _choice("run.accelerator", self.accelerator, ("cpu", "gpu", "cuda", "auto"))
        if isinstance(self.precision, int) and not isinstance(self.precision, bool):
            object.__setattr__(self, "precision", str(self.precision))      # YAML reads ``32`` as a number
        _choice("run.precision", self.precision, PRECISIONS)
        _boolean("run.deterministic", self.deterministic)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "task": TaskConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig("schnet", {"hidden": 64, "num_layers": 3}))
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        object.__setattr__(self, "task", resolve_task(self.task, self.data))

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        d = d or {}
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a mapping of sections {list(_SECTIONS)}, got {type(d).__name__}")
        check_keys(cls, d, "config section")
        kw = {}
        for name, sec in _SECTIONS.items():
            v = d.get(name, {})
            if v is None:
                v = {}
            if not isinstance(v, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {v!r}")
            if name == "model":
                # the defaults of TrainConfig's model section, whatever subset of it a file or override gives;
                # the default backbone options only apply to the default backbone
                base = asdict(cls().model)
                if v.get("backbone", base["backbone"]) != base["backbone"]:
                    base["backbone_options"] = {}
                kw[name] = ModelConfig.from_dict({**base, **v})
            else:
                check_keys(sec, v, f"{name}")
                kw[name] = sec(**v)
        return cls(**kw)

    def to_dict(self, resolved: bool = False) -> dict:
        """The config as plain data. ``resolved=False`` keeps ``task.kind`` / ``num_outputs`` / ``monitor`` /
        ``pooling`` as the user gave them (``auto`` / None: re-resolved when the dataset changes);
        ``resolved=True`` gives the values this config trains with (what :func:`farfield.train.run.config_hash`
        sees)."""
        d = asdict(self)
        d["data"]["split"] = list(self.data.split)
        if not resolved:
            d["task"].update(self.task.requested)
        return d


def resolve_task(task: TaskConfig, data: DataConfig) -> TaskConfig:
    """``task`` resolved against the loader of ``data.dataset`` (:meth:`TaskConfig.resolve`); the dataset's
    ``num_outputs`` counts for its default target (``data.target`` None, ``'all'`` or the loader's
    ``default_target``)."""
    from farfield.datasets import DATASETS, dataset_info
    info = dataset_info(data.dataset)
    default, task_for = None, None
    try:
        default = getattr(DATASETS[data.dataset], "default_target", None)
        task_for = getattr(DATASETS[data.dataset], "task_for", None)
    except (ImportError, AttributeError):
        pass
    targets = _target_names(data.target, default, info)
    if task_for is not None and data.path is not None and task.requested["kind"] == "auto":
        # datasets whose task depends on the user's files (``folder``: the label CSV) say it themselves
        info = {**info, "task": task_for(data.path, target=data.target, **dict(data.options))}
        return task.resolve(info, default_target=True, targets=targets, dataset=data.dataset)
    return task.resolve(info, default_target=data.target in (None, "all", default), targets=targets,
                        dataset=data.dataset)


def _target_names(target: str | None, default: str | None, info: dict) -> list | None:
    """The target names ``data.target`` asks for: None -> the loader's default target, ``'a,b'`` -> [a, b],
    ``'all'`` -> the loader's ``info["targets"]`` (when it lists them)."""
    if target is None:
        return [default] if default is not None else None
    if target == "all":
        return list(info.get("targets") or []) or None
    return [t.strip() for t in str(target).split(",") if t.strip()]


def parse_value(raw: str, where: str):
    """The value of a ``key=value`` override: YAML, with floats such as ``3e-3`` (a string in YAML 1.1) read as
    numbers; a ConfigError naming ``where`` when it does not parse."""
    import yaml
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: cannot parse value ({e})") from e
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return value


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` (or ``model.backbone_options.hidden=32``) overrides; values are YAML."""
    d = cfg.to_dict()
    for o in overrides:
        key, eq, raw = o.partition("=")
        if not eq or not key:
            raise ConfigError(f"override {o!r} is not of the form section.key=value")
        parts = key.split(".")
        if len(parts) < 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"override {o!r}: the key must start with a section: {list(_SECTIONS)}")
        value = parse_value(raw, f"override {o!r}")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                if p in node or node is d:
                    node[p] = {} if node.get(p) is None else node[p]
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"override {o!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return TrainConfig.from_dict(d)


def _looks_like_preset(path) -> bool:
    """A bare name (no folder, no YAML suffix) that is not a file: meant as a preset of :mod:`farfield.configs`."""
    s = str(path)
    return bool(s) and "/" not in s and "\\" not in s and not s.endswith((".yaml", ".yml")) and not Path(s).exists()


def read_yaml_mapping(path: str | Path, sections: list[str]) -> dict:
    """The mapping a YAML config file holds (InputError naming the file when it is missing, not YAML, or not a
    mapping of ``sections``)."""
    import yaml
    from farfield.errors import InputError
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "config file not found")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(str(p), f"not valid YAML ({e})") from e
    if not isinstance(d, dict):
        raise InputError(str(p), f"must contain a mapping of sections {sections}")
    return d


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides. ``path`` may also name
    a preset shipped with farfield (:func:`farfield.configs.presets`, e.g. ``peptides_func_gcn_tuned``) when no
    such file exists; an unknown bare name is a :class:`ConfigError` listing the presets."""
    from farfield.errors import InputError
    d = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and _looks_like_preset(path):
            from farfield.configs import preset_path, presets
            if str(path) not in presets():
                raise ConfigError(f"no config file or preset named {str(path)!r}; presets: {presets()} (or give the "
                                  "path of a YAML file)")
            p = preset_path(str(path))
        d = read_yaml_mapping(p, list(_SECTIONS))
        if "study" in d or "arms" in d:
            raise InputError(str(p), "is a study config (it has a study: / arms: section): run it with "
                                     f"`farfield study {p}`")
    return apply_overrides(TrainConfig.from_dict(d), list(overrides))
