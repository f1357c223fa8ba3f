"""Campaign settings: one pydantic-settings model feeds the CLI, the environment and `.env`.

Precedence, highest first: command line > `AUTORESEARCH_*` environment > `.env` > defaults.

API keys are deliberately *not* fields of `Settings`: they are read, without the prefix, into a
private `Credentials` object, so they never reach `--help`, `repr(settings)`, `str(settings)`
or `settings.model_dump()` (and so never a log, a checkpoint or a report).
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, CliSettingsSource, SettingsConfigDict

# -----------------------------------------------------------------------------
# constants

PROG = "python -m graph.run"
ENV_PREFIX = "AUTORESEARCH_"
ENV_FILE = ".env"

# a campaign name is one plain folder under --runs-dir: no path separator, no "..", not hidden
CAMPAIGN_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

DEFAULT_ARXIV_TERMS = [
    "language model pretraining",
    "transformer architecture",
    "optimizer",
    "attention",
    "normalization",
    "scaling laws",
    "learning rate schedule",
    "tokenization",
    "muon optimizer",
    "training efficiency",
]
DEFAULT_ARXIV_CATEGORIES = ["cs.LG", "cs.CL", "cs.AI", "stat.ML", "cs.NE"]


def date_tag() -> str:
    """The default campaign name: the local start time, e.g. 2026-11-24-2130."""
    return datetime.now().strftime("%Y-%m-%d-%H%M")


# what --help says about a default computed at start-up (pydantic-settings would name the factory)
HELP_DEFAULTS = {"campaign": "the date and time, e.g. 2026-11-30-0605"}


# -----------------------------------------------------------------------------
# credentials (no prefix, never printed)


class Credentials(BaseSettings):
    """Provider keys, read from the environment / `.env` under their usual names."""

    model_config = SettingsConfigDict(env_prefix="", env_file=ENV_FILE, extra="ignore")

    openai_api_key: SecretStr | None = None
    # Not a secret, but read under the name every OpenAI-compatible tool uses; `--base-url` wins.
    openai_base_url: str | None = None
    deepseek_api_key: SecretStr | None = None

    def secrets(self) -> list[str]:
        """The raw key values, for redacting them out of any text we format."""
        keys = (self.openai_api_key, self.deepseek_api_key)
        return [k.get_secret_value() for k in keys if k is not None and k.get_secret_value()]


# -----------------------------------------------------------------------------
# settings


class Settings(BaseSettings):
    """Autonomous research on nanochat's train.py: edit, train for a fixed budget, keep or discard."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        extra="ignore",  # a shared .env may hold other tools' variables
        cli_prog_name=PROG,
        cli_kebab_case=True,
        cli_implicit_flags=True,  # --offline / --no-offline instead of --offline true
        cli_avoid_json=True,
        cli_hide_none_type=True,
        cli_enforce_required=False,
    )

    # --- the campaign
    campaign: str = Field(
        default_factory=date_tag,
        description="campaign name, a folder under --runs-dir: letters, digits, '.', '_', '-' (not first: '.', "
                    "'-'), at most 100 characters",
    )
    runs_dir: Path = Field(Path("runs"), description="where campaigns live")
    resume: bool = Field(False, description="continue the campaign named by --campaign where it stopped")
    max_iterations: int | None = Field(
        None, ge=0, description="experiments to run after the baseline; None: until stopped"
    )
    max_hours: float | None = Field(None, gt=0, description="stop starting new experiments after this many hours; None: no limit")

    train: Path | None = Field(
        None, description="start a new campaign from this train.py instead of the template (it must call "
                          "load_harness() and H.finish(...); see README)"
    )

    # --- the harness (pinned for a campaign)
    time_budget: float | None = Field(
        None, gt=0, description="training wall-clock budget per run, in seconds; None: the profile's"
    )
    profile: str | None = Field(
        None, description="harness profile: cpu, gpu-small or h100; None: h100 with a CUDA GPU, else cpu"
    )
    data: str = Field("builtin", description="training corpus: builtin, climbmix or a local path")
    gpu: str | None = Field(
        None, description="GPU to train on, exported as CUDA_VISIBLE_DEVICES (e.g. 0); None: as visible"
    )
    # --- several agents at once (graph/parallel.py, Ray)
    gpus: str | None = Field(
        None, description="run one research agent per GPU on this campaign: a list such as 0,1, or all "
                          "(needs Ray: pip install -e '.[ray]'); None: one agent"
    )
    agents_per_gpu: int = Field(
        1, ge=1, le=8, description="agents sharing each of --gpus: one trains while another waits on its LLM"
    )
    workers: int = Field(
        1, ge=1, le=64, description="agents on the CPU profile (no GPU), sharing one campaign: to try parallel "
                                    "campaigns and to test them"
    )
    ray_address: str | None = Field(
        None, description="join this Ray cluster (`ray start --head` prints it) instead of starting one here"
    )
    prestart: bool = Field(
        True, description="start the next training process (imports; on a GPU, CUDA and the compiler) while the agent thinks"
    )
    unsafe_no_sandbox: bool = Field(
        False, description="run train.py WITHOUT the bubblewrap sandbox (where none can be set up): it can then "
                           "read your files and secrets and change the harness, and every score is suspect"
    )

    # --- the research loop
    plateau_patience: int = Field(
        3, ge=1, description="experiments without a new best before the director steps in"
    )
    max_agent_steps: int = Field(12, ge=1, description="tool calls the agent may make in one experiment")
    min_improvement: float = Field(
        0.0, ge=0, description="how much val_bpb must drop below the best for a change to be kept"
    )
    noise_runs: int | None = Field(
        None, ge=1, description="runs of each measured code, each on its own seed: the baseline's (to measure "
                                "seed noise) and a candidate's before it can be kept; 1: judge on one run, "
                                "noise-blind; None: 3 on a GPU, 4 on the cpu profile"
    )
    confidence: float = Field(
        0.975, gt=0.5, lt=1, description="one-sided confidence of the keep test: a candidate's gain over the best "
                                         "must be this unlikely to be seed noise (docs/NOISE.md)"
    )
    prompts_dir: Path | None = Field(
        None, description="folder of prompt .md files overriding the packaged ones of the same name; None: packaged only"
    )

    # --- the models
    offline: bool = Field(False, description="use the built-in offline researcher and director (no LLM)")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint; None: $OPENAI_BASE_URL, else the provider's"
    )
    agent_model: str | None = Field(None, description="model that edits train.py; None: the provider's default")
    director_model: str | None = Field(None, description="model that writes directives; None: the provider's default")
    reasoner_model: str | None = Field(None, description="model for slow reasoning steps; None: the provider's default")
    director_temperature: float = Field(1.0, ge=0, description="sampling temperature of the director")
    llm_timeout: float = Field(120.0, gt=0, description="seconds before an LLM request is abandoned and retried")
    llm_max_attempts: int = Field(6, ge=1, description="attempts per LLM call before the experiment is given up")
    max_llm_outage: float = Field(
        30.0, gt=0, description="minutes the LLM endpoint may stay unreachable before the campaign stops; "
                                "after 2 iterations lost to it, the campaign waits and retries instead of "
                                "spending iterations"
    )

    # --- LLM spending (tokens as the provider reports them; results.tsv records them per experiment)
    max_llm_tokens: int | None = Field(
        None, ge=1, description="stop the campaign once its LLM calls (agent and director, all sessions) have used "
                                "this many tokens, input and output; checked between experiments; None: no limit"
    )
    llm_price_in_per_mtok: float | None = Field(
        None, ge=0, description="price in dollars per million input (prompt) tokens, for the report's cost and "
                                "--max-llm-cost; None: not priced"
    )
    llm_price_out_per_mtok: float | None = Field(
        None, ge=0, description="price in dollars per million output (completion) tokens; None: not priced"
    )
    max_llm_cost: float | None = Field(
        None, gt=0, description="stop the campaign once its LLM calls have cost this many dollars at the prices "
                                "above (one must be set); checked between experiments; None: no limit"
    )

    # --- papers for the director
    arxiv_terms: list[str] = Field(
        DEFAULT_ARXIV_TERMS, description="arXiv search terms for the director"
    )
    arxiv_categories: list[str] = Field(
        DEFAULT_ARXIV_CATEGORIES, description="arXiv categories to search"
    )

    @field_validator("campaign")
    @classmethod
    def _plain_folder_name(cls, name: str) -> str:
        """A campaign is one folder directly under --runs-dir: `../x`, `a/b` or `/abs` would put the
        run dir somewhere else."""
        if not CAMPAIGN_NAME_RE.fullmatch(name):
            raise ValueError("a campaign name is one plain folder name: letters, digits, '.', '_' and '-', "
                             "not starting with '.' or '-', at most 100 characters (no '/', no '..')")
        return name

    @field_validator("gpus")
    @classmethod
    def _gpu_list(cls, gpus: str | None) -> str | None:
        if gpus is None or gpus.strip().lower() == "all":
            return None if gpus is None else "all"
        ids = [part.strip() for part in gpus.split(",") if part.strip()]
        if not ids or not all(part.isdigit() for part in ids) or len(set(ids)) != len(ids):
            raise ValueError("--gpus takes `all` or distinct GPU indices separated by commas, such as 0,1")
        return ",".join(ids)

    @model_validator(mode="after")
    def _one_way_to_parallel(self) -> Settings:
        if self.gpus is not None and self.workers > 1:
            raise ValueError("--workers runs agents on the CPU and --gpus on GPUs: give one of them")
        if self.gpus is not None and self.gpu is not None:
            raise ValueError("--gpu picks the one GPU of a one-agent campaign; with --gpus the agents get theirs")
        if self.agents_per_gpu > 1 and self.gpus is None:
            raise ValueError("--agents-per-gpu needs --gpus (on the CPU, --workers says how many agents)")
        return self

    @property
    def parallel(self) -> bool:
        """Several agents share the campaign (graph/parallel.py); else one runs it in this process."""
        return self.gpus is not None or self.workers > 1 or self.ray_address is not None

    @model_validator(mode="after")
    def _cost_needs_a_price(self) -> Settings:
        if self.max_llm_cost is not None and self.llm_price_in_per_mtok is None and self.llm_price_out_per_mtok is None:
            raise ValueError("--max-llm-cost needs a price: set --llm-price-in-per-mtok and/or "
                             "--llm-price-out-per-mtok (or AUTORESEARCH_LLM_PRICE_IN_PER_MTOK / AUTORESEARCH_LLM_PRICE_OUT_PER_MTOK)")
        return self

    # Private: not a field, so not on the CLI, not in repr / str / model_dump.
    _credentials: Credentials = PrivateAttr(default_factory=Credentials)

    @property
    def llm_prices(self) -> tuple[float | None, float | None]:
        """Dollars per million (input, output) tokens, None where not priced (graph/usage.py)."""
        return self.llm_price_in_per_mtok, self.llm_price_out_per_mtok

    @property
    def credentials(self) -> Credentials:
        return self._credentials

    def with_credentials(self, credentials: Credentials) -> Settings:
        """A copy using these keys instead of the environment's (tests, embedding)."""
        copy = self.model_copy()
        copy._credentials = credentials
        return copy


class _CliSource(CliSettingsSource):
    """The CLI as pydantic-settings builds it, with --help showing HELP_DEFAULTS' human defaults
    instead of "(default factory: date_tag)"."""

    def _help_format(self, field_name, field_info, *args, **kwargs) -> str:
        text = super()._help_format(field_name, field_info, *args, **kwargs)
        if field_name in HELP_DEFAULTS:
            text = re.sub(r"\(default factory: [^)]*\)", f"(default: {HELP_DEFAULTS[field_name]})", text)
        return text


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (default `sys.argv[1:]`) over env, `.env` and defaults.

    `--help` prints every option with its description and exits (code 0); an unknown option or a
    bad value prints an error and exits with code 2.
    """
    try:
        return CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else list(argv),
                          cli_settings_source=_CliSource(Settings))
    except ValidationError as e:
        # A bad value (from the CLI, the environment or .env) is a usage error, not a traceback.
        for err in e.errors():
            if not err["loc"]:          # a rule across options (a model validator): its message says it all
                print(f"{PROG}: error: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
                continue
            name = "_".join(str(part) for part in err["loc"])
            where = f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}"
            msg = err["msg"].removeprefix("Value error, ")    # our own validators' messages stand alone
            print(f"{PROG}: error: {where}: {msg} (got {err.get('input')!r})", file=sys.stderr)
        raise SystemExit(2) from None


def resolve_profile(settings: Settings) -> str:
    """The harness profile to use: the explicit one, else h100 when torch sees a CUDA GPU, else cpu."""
    if settings.profile:
        return settings.profile
    try:
        import torch  # lazy: importing torch costs seconds and the settings must not need it
    except ImportError:
        return "cpu"
    return "h100" if torch.cuda.is_available() else "cpu"
