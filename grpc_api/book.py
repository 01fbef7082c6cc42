"""What a server serves: for each model, the loaded champion and challenger, the A/B split
and the entity features, held in immutable records that are swapped by reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from models.ab import CHALLENGER, serving_arm
from models.feature_store import FeatureStore
from models.features import EntityFeatures, FeatureSpec
from models.registry import VersionInfo
from models.scorers import Scorer


@dataclass(frozen=True, eq=False)
class Loaded:
    """One version in memory: what the registry says of it, its scorer, and its alias
    (compared by identity: the same load is the same version)."""

    info: VersionInfo
    scorer: Scorer
    role: str
    loaded_at: float

    @cached_property
    def features(self) -> frozenset[str] | None:
        """The features a request must carry: those the flow asked of every event while
        this version learned, else those the model shows it learned from, if it can."""
        recorded = self.info.features
        return self.scorer.features if recorded is None else frozenset(recorded)


@dataclass(frozen=True)
class Served:
    """Everything one model's requests need, read once per request.

    A request takes the record once and uses only it, so a swap (a new record) never mixes
    two versions in one answer.
    """

    name: str
    champion: Loaded | None
    challenger: Loaded | None = None
    ab_fraction: float = 0.0
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    store: FeatureStore | None = None
    refused: str = ""  # why the champion the registry names is not loaded, if it is not
    ttl: float = 0.0  # seconds an idle entity's aggregates last, as the learn flow keeps them

    @property
    def features(self) -> EntityFeatures | None:
        """The per-entity feature code of the learn flow, if this model uses any."""
        if not self.spec or self.store is None:
            return None
        return EntityFeatures(self.spec, self.ttl)

    def pick(self, entity: str) -> Loaded | None:
        """The version that answers ``entity``: the challenger for its A/B share, else the
        champion (``None`` when there is no champion)."""
        challenger = self.challenger
        if (
            challenger is not None
            and self.ab_fraction > 0.0
            and serving_arm(entity, self.ab_fraction) == CHALLENGER
        ):
            return challenger
        return self.champion
