"""Loading model files, by name (``models/<name>.py``) or by path (a user's edited copy).

A model file is a plain Python module defining ``model(X, y, config, subsample=None)``,
``guide(X, y, config, subsample=None)``, a ``SETTINGS`` dict of defaults and, for gated
models, ``make_gate(features, experts, hidden)``. See ``models/mixture_of_models.py``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch

from .catalog import MODELS_DIR
from .catalog import (
    builtin_models as builtin_models,  # re-exported: pyro_moe.model_file.builtin_models
)
from .checks import as_array, check_count
from .config import Config, ScaledInput, input_scale, learn_set, robust_variance
from .errors import InputError, ModelFileError, PyroMoeError, find_stack_level


@dataclass(frozen=True)
class ModelText:
    """The text a model file was executed from and its SHA-256 digest: what a fit carries
    (:attr:`pyro_moe.FitResult.model_text`) and a saved result stores, so a result never
    needs the file on disk again and a loaded result can tell whether a file offered to it
    is the one it was fitted with (:func:`model_for_result`)."""

    name: str
    path: str
    text: str
    sha256: str

    @classmethod
    def of(cls, name: str, path: Path | str, text: str) -> ModelText:
        return cls(name=name, path=str(path), text=text, sha256=_sha256(text))

    @property
    def short(self) -> str:
        """The first 12 hex digits of the digest (for messages)."""
        return self.sha256[:12]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Model:
    """A loaded model file: its ``model``/``guide`` pair, settings and gate factory, and the
    :class:`ModelText` it was executed from (read once; never re-read from disk)."""

    name: str
    path: Path
    module: ModuleType
    settings: dict[str, Any] = field(default_factory=dict)
    text: ModelText | None = None

    @property
    def model(self) -> Callable:
        return self.module.model

    @property
    def guide(self) -> Callable:
        return self.module.guide

    @property
    def gated(self) -> bool:
        """True for a mixture of experts (the file defines ``make_gate``)."""
        return hasattr(self.module, "make_gate")

    @property
    def regularized(self) -> bool:
        return "regularization_cov" in self.settings

    @property
    def expert_catalog(self) -> dict:
        """The experts this file declares (``EXPERTS``: name -> :class:`pyro_moe.experts.Expert`),
        or those of ``models/mixture_of_models.py`` when it declares none."""
        catalog = getattr(self.module, "EXPERTS", None)
        if catalog is None:
            catalog = load_model("mixture_of_models").module.EXPERTS
        from .experts import Expert

        if not isinstance(catalog, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Expert) for k, v in catalog.items()
        ):
            raise ModelFileError(
                f"model file {self.path}: EXPERTS must be a dict of name -> "
                f"pyro_moe.experts.Expert, got {_show(catalog)}"
            )
        return dict(catalog)

    def make_gate(
        self, features: int, experts: int, hidden: int, scale: torch.Tensor | None = None
    ) -> torch.nn.Module:
        """The model file's ``make_gate(features, experts, hidden)`` network fed x / s
        (:class:`~pyro_moe.config.ScaledInput`; ``scale`` None: s = 1, to be overwritten
        by a saved ``state_dict``)."""
        try:
            inner = self.module.make_gate(features, experts, hidden)
        except Exception as e:
            raise model_file_error(self, e, "in make_gate") or ModelFileError(
                f"make_gate of model file {self.path} failed: {type(e).__name__}: {e}"
            ) from e
        if not isinstance(inner, torch.nn.Module) or next(inner.parameters(), None) is None:
            what = "a module without parameters" if isinstance(inner, torch.nn.Module) else (
                _show(inner))  # fmt: skip
            raise ModelFileError(
                f"make_gate of model file {self.path} must return a torch.nn.Module with "
                f"parameters (the gate to learn), got {what}"
            )
        scale = torch.ones(features, dtype=torch.float64) if scale is None else scale
        return ScaledInput(inner, scale.to(next(inner.parameters(), scale)))

    def config(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        experts: int,
        *,
        prior_mean=None,
        prior_cov=None,
        noise_precision=None,
        concentration=None,
        regularization_cov=None,
        gate_hidden: int | None = None,
        learn=None,
        noise_expert: bool | None = None,
        seed: int = 0,
        maps: torch.Tensor | None = None,
        noise_range=None,
        per_expert_noise: bool | None = None,
        gate_prior_scale: float | bool | None = None,
        weight_scale: torch.Tensor | None = None,
        input_rms: torch.Tensor | None = None,
    ) -> Config:
        """Build the :class:`Config` of a fit; ``None`` arguments take the file's defaults.

        Defaults: w0_k = 0; A_k = I; beta = 1 / Var(y); mu and ``learn`` from SETTINGS.
        Learning A_k is type-II ML of a full covariance from a single draw w_k: A_k collapses
        towards rank one (and, with w0_k learned too, onto the posterior: w0_k -> m_k,
        A_k -> B_k -> 0), which CAVI approaches only sublinearly, stopping at the floors.
        So the model files hold A_k fixed by default; ``learn="all"`` is the study's variant.

        ``maps`` (K, n + 1, d): each expert's own features and target
        (:mod:`pyro_moe.experts`); the weights then have the padded length n.

        ``per_expert_noise`` (default: ``SETTINGS["per_expert_noise"]``, else False): one
        noise precision beta_k per expert instead of one shared by all. ``noise_range``
        (lo, hi): the support of the noise expert's uniform density over the targets
        (default: the observed range, :func:`noise_bounds`; the curve functions pass the
        range of the target over the points' bounding box, see
        :func:`pyro_moe.curves.design.target_range`).

        ``gate_prior_scale``: s of the gate prior (a gated file): None takes
        ``SETTINGS["gate_prior_scale"]`` (with the noise expert
        ``SETTINGS["noise_gate_prior_scale"]`` where the file has it), False none.

        ``weight_scale`` s (n,): the unit of each weight (:func:`pyro_moe.fitting.weight_scale`).
        The defaults are then in those units: A_k = diag(s)^2 and the file's Xi becomes
        diag(s) Xi diag(s); values given here are used as they are (data units).

        ``input_rms`` (n,): rms(x_j) of the whole data set, for the gate's input scale
        (:class:`~pyro_moe.config.ScaledInput`) when ``X`` holds only some of its rows (a
        distributed fit); default: computed from ``X``.
        """
        K, n = int(experts), X.shape[1]
        dt = dict(dtype=X.dtype, device=X.device)
        if maps is not None:
            from .experts import check_maps

            maps = check_maps(_as(maps, dt, "maps"), K, X.shape[1])
            n = maps.shape[1] - 1
        s = self.settings
        mean = torch.zeros(K, n, **dt) if prior_mean is None else _as(prior_mean, dt, "prior_mean")
        if mean.dim() == 1:
            if mean.shape[0] != n:
                raise InputError(f"prior_mean must have {n} entries (or shape ({K}, {n}))")
            mean = mean.expand(K, n)
        if prior_cov is None and weight_scale is not None:
            cov = torch.diag(_as(weight_scale, dt).square())
        else:
            cov = _as_cov(1.0 if prior_cov is None else prior_cov, n, dt, "prior_cov")
        if cov.dim() == 2:
            cov = cov.expand(K, n, n)
        if noise_precision is None:  # with a noise expert: a spread robust to its outliers
            noisy = s.get("noise_expert", False) if noise_expert is None else noise_expert
            var = robust_variance(y) if noisy is True else float(y.var()) if y.numel() > 1 else 0.0
            if not var > 0:  # constant targets: their own square as the scale, else 1
                var = float(y.square().mean()) or 1.0
            noise_precision = 1.0 / var
        if noise_expert is not None and not isinstance(noise_expert, bool):
            raise InputError(f"noise_expert={noise_expert!r} is not allowed: True, False or None")
        per_expert = (
            s.get("per_expert_noise", False) if per_expert_noise is None else per_expert_noise
        )
        if per_expert and _as(noise_precision, dt, "noise_precision").numel() == K:
            beta = _as(noise_precision, dt, "noise_precision").reshape(K)
        else:
            beta = _scalar(noise_precision, dt, "noise_precision")
            if per_expert:
                beta = beta.expand(K).clone()
        noise = s.get("noise_expert", False) if noise_expert is None else noise_expert
        bounds = None
        if noise:
            bounds = noise_bounds(y) if noise_range is None else _as(noise_range, dt).reshape(2)
            if not (bool(torch.isfinite(bounds).all()) and float(bounds[1] - bounds[0]) > 0):
                raise InputError(f"noise_range must be (lo, hi) with lo < hi, got {noise_range}")
            lo, hi = float(bounds[0]), float(bounds[1])
            if float(y.min()) < lo or float(y.max()) > hi:
                raise InputError(
                    f"noise_range ({lo:.6g}, {hi:.6g}) does not hold every target "
                    f"(from {float(y.min()):.6g} to {float(y.max()):.6g})"
                )
        C = K + int(noise)
        mu = s.get("concentration", 1.0) if concentration is None else concentration
        mu = _as(mu, dt, "concentration")
        mu = mu.expand(C) if mu.dim() == 0 else mu
        xi = None
        if self.regularized:
            xi = _as_cov(
                s["regularization_cov"] if regularization_cov is None else regularization_cov,
                n,
                dt,
                "regularization_cov",
            )
            if regularization_cov is None and weight_scale is not None:
                d = _as(weight_scale, dt)
                xi = d.unsqueeze(-1) * xi * d
        elif regularization_cov is not None:
            raise InputError(f"model {self.name!r} has no prior regularization (no Xi to set)")
        gate = hidden = None
        if gate_hidden is not None and not self.gated:
            raise InputError(f"gate_hidden: model {self.name!r} has no gate network")
        if self.gated:
            hidden = s.get("gate_hidden", 8) if gate_hidden is None else gate_hidden
            hidden = check_count("gate_hidden", hidden, 1, 10**6)
            # built on the CPU from the CPU generator, then moved: the same seed gives the
            # same gate on every device
            with torch.random.fork_rng(devices=[]), torch.device("cpu"):
                torch.manual_seed(seed)
                rms = X.square().mean(0).sqrt() if input_rms is None else input_rms
                gate = self.make_gate(X.shape[1], K, hidden, input_scale(rms.cpu()))
            gate = gate.to(**dt)
        learned = learn_set(s.get("learn", "all") if learn is None else learn)
        if not self.gated:
            # learn naming only the gate, which this model lacks, is refused; a list naming
            # it among others (one list for every model file) is kept without it, and says so
            named = not (learn is None or (isinstance(learn, str) and learn == "all"))
            if named and learned == {"gate"}:
                raise InputError(
                    f"learn={learn!r}: model {self.name!r} has no gate (it is a mixture of "
                    "models, not of experts); learn one of prior_mean, prior_cov, "
                    "noise_precision"
                )
            if named and "gate" in learned:
                warnings.warn(
                    f"learn={learn!r}: model {self.name!r} has no gate; 'gate' is ignored "
                    f"(learning {sorted(learned - {'gate'})})",
                    UserWarning,
                    stacklevel=find_stack_level(),
                )
            learned = learned - {"gate"}
        return Config(
            experts=K,
            features=n,
            prior_mean=mean.clone(),
            prior_cov=cov.clone(),
            noise_precision=beta,
            concentration=mu.clone(),
            regularization_cov=xi,
            gate=gate,
            gate_hidden=hidden,
            noise_bounds=bounds,
            noise_weight=_as(s.get("noise_weight", 0.1), dt).reshape(()) if noise else None,
            gate_prior_scale=self._gate_prior_scale(gate_prior_scale, noise)
            if self.gated
            else None,
            learn=learned,
            maps=maps,
        )

    def _gate_prior_scale(self, given: float | bool | None, noise: bool) -> float | None:
        """The gate prior's s in use: ``given`` (False: None, no prior), else the file's."""
        if given is True:
            raise InputError(
                "gate_prior_scale=True is not allowed: a positive number, False or None"
            )
        if given is False:
            return None
        if given is not None:
            return float(given)
        s = self.settings
        return (
            s.get("noise_gate_prior_scale", s.get("gate_prior_scale"))
            if noise
            else s.get("gate_prior_scale")
        )


def noise_bounds(y: torch.Tensor, margin: float = 1e-6) -> torch.Tensor:
    """(lo, hi): the observed target range, widened by ``margin`` of its width on each side.

    The noise expert's density is 1 / (hi - lo) on [lo, hi): constant over the targets seen.
    """
    lo, hi = float(y.min()), float(y.max())
    width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    return torch.tensor([lo - margin * width, hi + margin * width], dtype=y.dtype, device=y.device)


def load_model(name_or_path: str | Path | Model, *, sha256: str | None = None) -> Model:
    """Load a model file by built-in name (``"mixture_of_experts"``) or by path.

    The file is read once and executed from that text, which the returned :class:`Model`
    keeps (:class:`ModelText`). ``sha256``: the digest the file's text must have; a file
    whose text differs is refused *before* it runs (a :class:`ModelFileError` saying so).

    Raises :class:`ModelFileError` for an unknown name, a missing file, a syntax error or a
    file that lacks ``model``/``guide``.
    """
    if isinstance(name_or_path, Model):
        _check_digest(name_or_path.text, sha256, name_or_path.path)
        return name_or_path
    written = _read(*_locate(name_or_path))
    _check_digest(written, sha256, written.path)
    return _execute(written, Path(written.path))


def _read(path: Path, name: str) -> ModelText:
    """The text of the model file at ``path`` with its digest (read once, not run)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFileError(f"cannot read model file {path}: {e}") from e
    return ModelText.of(name, path, text)


def _locate(name_or_path: str | Path) -> tuple[Path, str]:
    """(resolved path, name) of a built-in name or a path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".py") or path.exists() or "/" in text:
        if not path.is_file():
            raise ModelFileError(f"no such model file: {text}")
        name = path.stem
    else:
        path = MODELS_DIR / f"{text}.py"
        if not path.is_file():
            raise ModelFileError(
                f"unknown model {text!r}; built-in models: {', '.join(builtin_models())} "
                "(or give the path of a model file)"
            )
        name = text
    return path.resolve(), name


def _check_digest(written: ModelText | None, sha256: str | None, path) -> None:
    if sha256 is None or (written is not None and written.sha256 == sha256):
        return
    have = "unknown" if written is None else written.short
    raise ModelFileError(
        f"model file {path} is not the one the result was fitted with: its text has sha256 "
        f"{have}..., the result's model file had {sha256[:12]}... (not run)"
    )


@functools.lru_cache(maxsize=32)
def _compiled(text: str, path: str) -> CodeType:
    """The code object of a model file's text (a pure function of the text and its path,
    kept: compiling was 0.5 of the 0.8 ms every ``fit`` paid to load a built-in file; the
    module itself is executed afresh every time, so a file's module-level state is its own)."""
    return compile(text, path, "exec")


def _execute(written: ModelText, path: Path) -> Model:
    """Run ``written.text`` as the module of the model file at ``path``."""
    digest = hashlib.sha1(f"{path}\0{written.sha256}".encode()).hexdigest()[:10]
    module_name = f"pyro_moe_models.{written.name}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise ModelFileError(f"cannot load model file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up
    try:
        exec(_compiled(written.text, str(path)), module.__dict__)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise ModelFileError(f"syntax error in model file {path}, line {e.lineno}: {e.msg}") from e
    except (Exception, SystemExit) as e:  # a file that calls sys.exit() at import, too
        sys.modules.pop(module_name, None)
        line = _line_in(path, e) or traceback.extract_tb(e.__traceback__)[-1].lineno
        raise ModelFileError(
            f"model file {path} failed to import (line {line}): {type(e).__name__}: {e}"
        ) from e
    for required in ("model", "guide"):
        if not callable(getattr(module, required, None)):
            raise ModelFileError(f"model file {path} does not define a function {required}()")
    settings = getattr(module, "SETTINGS", {})
    if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
        raise ModelFileError(
            f"model file {path}: SETTINGS must be a dict of option names to values, got "
            f"{_show(settings)}"
        )
    settings = dict(settings)
    return Model(name=written.name, path=path, module=module, settings=settings, text=written)


def model_for_result(
    written: ModelText | None, name: str, path: str, given: str | Path | Model | None = None
) -> Model:
    """The model file of a *loaded* result, never one the result's own data name.

    ``given`` (the user's choice: ``FitResult.load(..., model=...)``) is loaded only if its
    text has the digest the result recorded (else a :class:`ModelFileError`, and the file is
    not run). Without it, only a built-in model file whose installed text has that digest
    is used (the package's own code); any other file a saved result names is refused with a
    message saying how to give it: a data file never makes pyro_moe run code.
    """
    sha = None if written is None else written.sha256
    if given is not None:
        return load_model(given, sha256=sha)
    if name in builtin_models():  # the package's own file, read once and run if it matches
        builtin = _read(*_locate(name))
        if sha is None or builtin.sha256 == sha:
            return _execute(builtin, Path(builtin.path))
    digest = "" if sha is None else f" (sha256 {sha[:12]}...)"
    raise ModelFileError(
        f"this result was fitted with the model file {path}{digest}, which a loaded result "
        "does not run by itself; give it explicitly: FitResult.load(file, model=PATH) "
        "checks that PATH is that file and uses it"
    )


def _show(value: object) -> str:
    """A short repr of a model file's bad value, with its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _line_in(path: Path, exc: BaseException) -> int | None:
    """The line of the innermost frame of ``exc``'s traceback that is in file ``path``."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and Path(frame.filename).resolve() == path:
            line = frame.lineno
    return line


def model_file_error(model: Model, exc: BaseException, when: str) -> ModelFileError | None:
    """A :class:`ModelFileError` naming the file and line when ``exc`` was raised inside
    ``model``'s file (its model, guide, gate, at any depth), else None. pyro_moe's own
    errors are left as they are (None). ``when``: what was running ("under SVI", ...)."""
    if isinstance(exc, PyroMoeError):
        return None
    line = _line_in(model.path, exc)
    if line is None:
        return None
    text = " ".join(str(exc).split("Trace Shapes:")[0].split())  # Pyro appends its trace
    text = text if len(text) <= 300 else text[:297] + "..."
    return ModelFileError(
        f"model file {model.path}, line {line}: {type(exc).__name__} {when}: {text}"
    )


def _as(value, dt, name: str = "value") -> torch.Tensor:
    """A hyperparameter value as a real tensor of the fit's dtype and device (one
    InputError naming it otherwise: :func:`pyro_moe.checks.as_array`)."""
    if torch.is_tensor(value) and not value.requires_grad and not value.is_complex():
        return value.to(**dt)
    return as_array(name, value, **dt, finite=False)  # Config says which values are finite


def _scalar(value, dt, name: str) -> torch.Tensor:
    t = _as(value, dt, name)
    if t.numel() != 1:
        raise InputError(f"{name} must be a positive number, got shape {tuple(t.shape)}")
    return t.reshape(())


def _as_cov(value, n: int, dt, name: str = "covariance") -> torch.Tensor:
    """A scalar → c I, a vector → diag, a matrix (or stack of matrices) as is."""
    t = _as(value, dt, name)
    if t.dim() == 0:
        return t * torch.eye(n, **dt)
    if t.dim() == 1:
        if t.shape[0] != n:
            raise InputError(f"{name} as a vector must have {n} entries, got {t.shape[0]}")
        return torch.diag(t)
    return t
