"""The content contract: everything that changes a proxy's value for the same item.

A proxy is ``ProxyModel(encoder(text(item), image(item)))``. Training fits the model on
features of one encoder reading one text; serving must build the same input or every proxy is
silently wrong. The contract names each setting that decides that input, by the config key
that sets it:

- the text: ``encoder.text_fields`` and the template (``data/schema.py: TEXT_TEMPLATE``);
- the encoder (its ``output_settings``): kind, weights (by digest), token budget, pooling,
  segment pooling, normalisation, prompt, image preprocessing and tiles, dtype.

Layer clusters are not here: they are fitted once, stored in the model (``spec.clusters``) and
the stream pools by exactly those, so serving has no setting to disagree on. Batch sizes,
devices and thread counts change only speed, so they are not here either.

Where it lives and is checked:

- extraction records it in the feature table (Parquet metadata), training copies it into the
  model's manifest (``ProxyManifest.content``);
- ``read_feature_table``, the training jobs, the stream (driver and every worker, also on a
  hot swap), the backfill and ``ProxyReader`` compare it with their own and refuse a
  mismatch with one line naming each setting that differs (:func:`describe_mismatch`).

Example::

    trained = configured_contract(EncoderConfig(text_fields=("title", "categories")))
    serving = configured_contract(EncoderConfig(text_fields=("title",)))
    describe_mismatch(trained, serving)
    # "encoder.text_fields is ['title', 'categories'] in training but ['title'] here"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from idproxy_stream.config import EncoderConfig
from idproxy_stream.data.schema import TEXT_TEMPLATE
from idproxy_stream.encoders.checkpoints import settings_fingerprint
from idproxy_stream.encoders.registry import encoder_output_settings

TEXT_FIELDS_KEY = "encoder.text_fields"
TEXT_TEMPLATE_KEY = "text_template"
# An encoder that does not list its settings (a test double) is known by its fingerprint only.
FINGERPRINT_KEY = "encoder.fingerprint"


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so contracts compare equal."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class ContentContract:
    """Setting name -> value, for every setting that changes a proxy's value.

    ``settings`` holds JSON values (weights by their digest); :attr:`fingerprint` hashes them.
    """

    settings: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", _plain(dict(sorted(self.settings.items()))))

    @property
    def fingerprint(self) -> str:
        """16 hex digits; equal exactly when every setting is equal."""
        return settings_fingerprint(self.settings)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(self.settings.get(TEXT_FIELDS_KEY, ()))

    def to_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ContentContract:
        return cls(dict(raw["settings"]))


def content_contract(
    encoder_settings: Mapping[str, Any], text_fields: Sequence[str]
) -> ContentContract:
    """The contract of an encoder with ``encoder_settings`` reading ``text_fields``."""
    return ContentContract(
        {
            **encoder_settings,
            TEXT_FIELDS_KEY: list(text_fields),
            TEXT_TEMPLATE_KEY: TEXT_TEMPLATE,
        }
    )


def configured_contract(config: EncoderConfig) -> ContentContract:
    """The contract an encoder built from ``config`` serves, computed without loading it."""
    return content_contract(encoder_output_settings(config), config.text_fields)


def encoder_contract(encoder: object, text_fields: Sequence[str]) -> ContentContract:
    """The contract of a built encoder reading ``text_fields``."""
    settings = getattr(encoder, "output_settings", None)
    if settings is None:
        settings = {FINGERPRINT_KEY: encoder.fingerprint}  # type: ignore[attr-defined]
    return content_contract(settings, text_fields)


def differences(recorded: ContentContract, configured: ContentContract) -> list[str]:
    """One phrase per setting that differs, kind and weights first, e.g.
    ``"encoder.text.max_tokens is 256 in training but 64 here"``."""
    names = sorted(
        set(recorded.settings) | set(configured.settings),
        key=lambda name: (name not in ("encoder.kind", TEXT_FIELDS_KEY), name),
    )
    missing = "(not set)"
    return [
        f"{name} is {recorded.settings.get(name, missing)!r} in training but "
        f"{configured.settings.get(name, missing)!r} here"
        for name in names
        if recorded.settings.get(name, missing) != configured.settings.get(name, missing)
    ]


def describe_mismatch(recorded: ContentContract | None, configured: ContentContract) -> str | None:
    """Why proxies of a model trained under ``recorded`` would be wrong here, or None.

    One line: every setting that differs, or that the model records no contract at all.
    """
    if recorded is None:
        return (
            "the model records no content contract (it was trained before contracts were "
            "recorded), so nothing shows it reads the configured text and encoder: retrain it"
        )
    found = differences(recorded, configured)
    return "; ".join(found) if found else None
