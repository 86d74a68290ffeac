"""A seeded multimodal recommendation dataset with planted, recoverable structure.

Generating model (all of it vectorised; 1e6 items and 1e7 interactions take seconds):

- T topic centres ``m_t`` (unit vectors in R^F). Item i has a primary topic ``t_i`` and
  latent factors ``z_i = m_{t_i} + ITEM_SPREAD * e_i`` with ``e_i ~ N(0, I/F)``; its
  exposure weight is log-normal (``exp(l_i)``, ``l_i ~ N(0, popularity_sigma^2)``) and its
  click bias ``b_i = popularity_click_effect * l_i / popularity_sigma + N(0, item_bias_std^2)``.
- Users have a favourite topic and preferences ``u_j = m_{s_j} + USER_SPREAD * e_j``;
  their categorical features (age bucket, region) are noisy functions of ``u_j``.
- Each user sees ``interactions_per_user`` distinct items: a topic drawn with probability
  proportional to (topic exposure mass) * ``exp(exposure_preference * u_j . m_t)``, then an
  item of that topic proportional to its exposure weight. So interaction counts range
  from a handful to hundreds. Timestamps increase per user.
- Click: ``label ~ Bernoulli(sigmoid(click_scale * u_j . z_i + b_i + click_bias))``.
- Content is a noisy function of ``z_i``: title and description are built from the
  topic's vocabulary (each word off-topic with probability ``text_noise``) plus "mood"
  words naming the item's largest within-topic factor deviations; categories are the
  item's top topics; year follows factor 0; the image's shape is the topic (swapped with
  probability ``image_noise / 2``) and its hue, size, stripes and background follow fixed
  projections of ``z_i`` plus noise.

Ids start at 1. Row r of every per-item array in ``metadata`` belongs to ``item_id r+1``
(the items table is sorted by id), likewise for users; ``metadata["interaction_logit"]``
is aligned with the interactions rows. Interactions are sorted by (user_id, timestamp);
``rating`` equals the click label (0.0/1.0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from idproxy_stream.config import SyntheticDataConfig
from idproxy_stream.data.images import SHAPES, GlyphAttributes, encode_png, render_glyphs
from idproxy_stream.data.schema import RecDataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topic:
    """One topic's vocabulary; every topic has the same number of words of each kind."""

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]


# fmt: off
TOPICS = (
    Topic("space", ("galaxy", "rocket", "orbit", "planet", "astronaut", "comet", "nebula", "moon", "satellite", "starship"),  # noqa: E501
          ("cosmic", "silent", "distant", "lunar", "stellar", "weightless"),
          ("orbits", "launches", "explores", "drifts past", "charts", "signals")),
    Topic("cooking", ("kitchen", "recipe", "chef", "oven", "spice", "bread", "soup", "pastry", "feast", "garlic"),  # noqa: E501
          ("savory", "golden", "crispy", "homemade", "spicy", "buttery"),
          ("bakes", "simmers", "seasons", "tastes", "roasts", "serves")),
    Topic("travel", ("journey", "passport", "island", "train", "harbor", "map", "suitcase", "village", "road", "border"),  # noqa: E501
          ("faraway", "wandering", "scenic", "exotic", "coastal", "nomadic"),
          ("crosses", "visits", "discovers", "wanders through", "backpacks across", "reaches")),
    Topic("music", ("guitar", "melody", "band", "concert", "song", "piano", "drummer", "rhythm", "choir", "stage"),  # noqa: E501
          ("melodic", "acoustic", "rhythmic", "soulful", "harmonic", "electric"),
          ("sings", "plays", "records", "tunes", "composes", "performs")),
    Topic("sports", ("stadium", "team", "coach", "match", "champion", "ball", "league", "goal", "runner", "trophy"),  # noqa: E501
          ("competitive", "athletic", "victorious", "sporting", "undefeated", "underdog"),
          ("trains", "scores", "defeats", "tackles", "coaches", "wins")),
    Topic("gardening", ("garden", "seed", "rose", "greenhouse", "soil", "orchard", "blossom", "tulip", "hedge", "vine"),  # noqa: E501
          ("blooming", "leafy", "fragrant", "green", "rustic", "fertile"),
          ("plants", "waters", "prunes", "grows", "harvests", "tends")),
    Topic("history", ("empire", "king", "castle", "war", "dynasty", "ruin", "knight", "treaty", "revolution", "chronicle"),  # noqa: E501
          ("ancient", "medieval", "royal", "forgotten", "imperial", "historic"),
          ("conquers", "rules", "defends", "uncovers", "besieges", "rebuilds")),
    Topic("technology", ("robot", "computer", "algorithm", "network", "circuit", "software", "gadget", "laboratory", "engineer", "chip"),  # noqa: E501
          ("digital", "smart", "robotic", "virtual", "automated", "wireless"),
          ("programs", "hacks", "builds", "computes", "upgrades", "connects")),
    Topic("fashion", ("dress", "runway", "designer", "fabric", "jacket", "boutique", "model", "silk", "collection", "hat"),  # noqa: E501
          ("stylish", "elegant", "vintage", "glamorous", "tailored", "chic"),
          ("designs", "sews", "wears", "styles", "tailors", "dresses")),
    Topic("ocean", ("wave", "reef", "whale", "ship", "sailor", "lighthouse", "tide", "coral", "dolphin", "shore"),  # noqa: E501
          ("deep", "salty", "tidal", "stormy", "marine", "sunken"),
          ("sails", "dives", "swims", "navigates", "floats", "rescues")),
    Topic("mystery", ("detective", "clue", "secret", "murder", "suspect", "alibi", "shadow", "puzzle", "witness", "case"),  # noqa: E501
          ("mysterious", "hidden", "sinister", "cryptic", "unsolved", "shadowy"),
          ("investigates", "solves", "hides", "suspects", "follows", "questions")),
    Topic("wildlife", ("lion", "forest", "wolf", "jungle", "eagle", "savanna", "bear", "tiger", "herd", "safari"),  # noqa: E501
          ("wild", "untamed", "feral", "roaming", "majestic", "hungry"),
          ("hunts", "roams", "tracks", "prowls", "migrates", "protects")),
    Topic("art", ("painting", "canvas", "sculptor", "museum", "portrait", "gallery", "brush", "painter", "mural", "sketch"),  # noqa: E501
          ("colorful", "abstract", "artistic", "painted", "surreal", "impressionist"),
          ("paints", "sketches", "sculpts", "exhibits", "draws", "restores")),
    Topic("fitness", ("workout", "gym", "muscle", "marathon", "yoga", "trainer", "diet", "sprint", "dumbbell", "treadmill"),  # noqa: E501
          ("fit", "healthy", "strong", "energetic", "lean", "sweaty"),
          ("lifts", "stretches", "jogs", "exercises", "sprints", "flexes")),
    Topic("romance", ("love", "wedding", "kiss", "heart", "sweetheart", "letter", "date", "bride", "promise", "valentine"),  # noqa: E501
          ("romantic", "passionate", "lovesick", "charming", "heartfelt", "dreamy"),
          ("loves", "marries", "kisses", "courts", "adores", "embraces")),
    Topic("finance", ("bank", "market", "investor", "stock", "fortune", "coin", "broker", "budget", "profit", "wallet"),  # noqa: E501
          ("wealthy", "financial", "profitable", "bullish", "thrifty", "lucrative"),
          ("invests", "trades", "saves", "earns", "lends", "borrows")),
)
# One (negative, positive) word pair per latent factor (cycled when F > 12).
MOOD_WORDS = (
    ("quiet", "loud"), ("dark", "bright"), ("slow", "fast-paced"), ("gentle", "fierce"),
    ("simple", "intricate"), ("old-fashioned", "modern"), ("serious", "playful"),
    ("small", "epic"), ("calm", "thrilling"), ("sad", "joyful"), ("cold", "warm"),
    ("familiar", "strange"),
)
# fmt: on

AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
AGE_BUCKET_SHARES = (0.06, 0.18, 0.30, 0.22, 0.14, 0.10)
REGIONS = ("north", "south", "east", "west", "central")
USER_FEATURE_COLUMNS = ("age", "region")

ITEM_SPREAD = 0.6  # within-topic spread of item factors (relative to the topic centre)
USER_SPREAD = 0.8  # within-topic spread of user preferences
SECOND_CATEGORY_RATIO = 0.5  # second topic listed when its affinity >= ratio * primary's
YEAR_CENTRE, YEAR_SPREAD, YEAR_NOISE = 2000, 10.0, 3.0
START_TIMESTAMP = 1_600_000_000
USER_START_SPAN_S = 365 * 86_400
MEAN_GAP_S = 6 * 3_600
EXPOSURE_ROUNDS = 6  # resampling rounds with topic preference before falling back to uniform
EVENT_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Items:
    topic: np.ndarray  # (N,) int
    factors: np.ndarray  # (N, F) float32
    log_popularity: np.ndarray  # (N,) float64
    bias: np.ndarray  # (N,) float32


@dataclass(frozen=True)
class _Users:
    topic: np.ndarray  # (U,) int
    factors: np.ndarray  # (U, F) float32


def generate_synthetic(config: SyntheticDataConfig) -> RecDataset:
    """Generate the dataset described in the module docstring; same config, same bytes.

    Independent random streams drive structure, text, images, exposure, clicks and time,
    so ``with_images=False`` changes nothing but ``image_bytes``.
    """
    streams = [np.random.default_rng(seed) for seed in np.random.SeedSequence(config.seed).spawn(6)]
    structure_rng, text_rng, image_rng, exposure_rng, click_rng, time_rng = streams
    topics = TOPICS[: config.num_topics]

    centres = _unit_rows(structure_rng.normal(size=(config.num_topics, config.num_factors)))
    topic_share = structure_rng.dirichlet(np.full(config.num_topics, 2.0))
    items = _draw_items(config, centres, topic_share, structure_rng)
    users = _draw_users(config, centres, topic_share, structure_rng)
    age, region = _user_features(users.factors, structure_rng)
    projections = structure_rng.normal(size=(config.num_factors, 5)) / np.sqrt(config.num_factors)

    titles, descriptions = _item_texts(items, centres, topics, config.text_noise, text_rng)
    categories = _item_categories(items, centres, topics)
    years = _item_years(items.factors, config.num_factors, structure_rng)
    image_bytes: list[bytes | None] = [None] * config.num_items
    if config.with_images:
        attributes = _glyph_attributes(items, projections, config, image_rng)
        pixels = render_glyphs(attributes, config.image_size, 0.25 * config.image_noise, image_rng)
        image_bytes = list(encode_png(pixels))

    event_users, event_items = _sample_exposures(config, items, users, centres, exposure_rng)
    logits = _click_logits(config, items, users, event_users, event_items)
    click_probability = 1.0 / (1.0 + np.exp(-logits))
    labels = (click_rng.random(len(logits)) < click_probability).astype(np.int8)
    timestamps = _timestamps(event_users, config.num_users, time_rng)

    items_frame = pd.DataFrame(
        {
            "item_id": np.arange(1, config.num_items + 1, dtype=np.int64),
            "title": pd.Series(titles, dtype=str),
            "description": pd.Series(descriptions, dtype=str),
            "tags": pd.Series([[] for _ in range(config.num_items)], dtype=object),
            "categories": pd.Series(categories, dtype=object),
            "year": years,
            "image_uri": pd.Series([None] * config.num_items, dtype=object),
            "image_bytes": pd.Series(image_bytes, dtype=object),
        }
    )
    users_frame = pd.DataFrame(
        {
            "user_id": np.arange(1, config.num_users + 1, dtype=np.int64),
            "age": pd.Series(age, dtype=str),
            "region": pd.Series(region, dtype=str),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": event_users.astype(np.int64) + 1,
            "item_id": event_items.astype(np.int64) + 1,
            "timestamp": timestamps,
            "rating": labels.astype(np.float32),
            "label": labels,
        }
    )
    metadata = {
        "generator": "synthetic",
        "config": config.model_dump(),
        "topic_names": [topic.name for topic in topics],
        "topic_centres": centres.astype(np.float32),
        "item_topic": items.topic,
        "item_factors": items.factors,
        "item_bias": items.bias,
        "item_exposure_weight": np.exp(items.log_popularity).astype(np.float32),
        "user_topic": users.topic,
        "user_factors": users.factors,
        "click_scale": config.click_scale,
        "click_bias": config.click_bias,
        "image_projections": projections.astype(np.float32),
        "interaction_logit": logits,
    }
    dataset = RecDataset(
        name="synthetic",
        items=items_frame,
        users=users_frame,
        interactions=interactions,
        user_feature_columns=USER_FEATURE_COLUMNS,
        metadata=metadata,
    )
    logger.info("generated %s", dataset.summary())
    return dataset


# ---------------------------------------------------------------- latent structure


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _draw_items(
    config: SyntheticDataConfig,
    centres: np.ndarray,
    topic_share: np.ndarray,
    rng: np.random.Generator,
) -> _Items:
    count, factors = config.num_items, config.num_factors
    topic = rng.choice(config.num_topics, size=count, p=topic_share)
    noise = rng.normal(size=(count, factors)) / np.sqrt(factors)
    item_factors = (centres[topic] + ITEM_SPREAD * noise).astype(np.float32)
    log_popularity = rng.normal(0.0, config.popularity_sigma, size=count)
    standardised = log_popularity / max(config.popularity_sigma, 1e-9)
    bias = config.popularity_click_effect * standardised + rng.normal(
        0.0, config.item_bias_std, count
    )
    return _Items(topic, item_factors, log_popularity, bias.astype(np.float32))


def _draw_users(
    config: SyntheticDataConfig,
    centres: np.ndarray,
    topic_share: np.ndarray,
    rng: np.random.Generator,
) -> _Users:
    count, factors = config.num_users, config.num_factors
    topic = rng.choice(config.num_topics, size=count, p=topic_share)
    noise = rng.normal(size=(count, factors)) / np.sqrt(factors)
    return _Users(topic, (centres[topic] + USER_SPREAD * noise).astype(np.float32))


def _user_features(
    user_factors: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Age bucket from a noisy projection's quantile, region from a noisy argmax."""
    count, factors = user_factors.shape
    age_direction = _unit_rows(rng.normal(size=(1, factors)))[0]
    age_score = user_factors @ age_direction
    age_score = (age_score - age_score.mean()) / (age_score.std() + 1e-9)
    age_score = age_score + rng.normal(0.0, 0.5, count)
    edges = np.quantile(age_score, np.cumsum(AGE_BUCKET_SHARES)[:-1])
    age = np.asarray(AGE_BUCKETS, dtype=object)[np.searchsorted(edges, age_score)]
    region_directions = _unit_rows(rng.normal(size=(len(REGIONS), factors)))
    region_score = user_factors @ region_directions.T + rng.gumbel(0.0, 0.3, (count, len(REGIONS)))
    region = np.asarray(REGIONS, dtype=object)[region_score.argmax(axis=1)]
    return age, region


def _item_years(item_factors: np.ndarray, factors: int, rng: np.random.Generator) -> np.ndarray:
    """Year from factor 0 (standardised by its analytic spread) plus noise."""
    standard = item_factors[:, 0] * np.sqrt(factors / (1.0 + ITEM_SPREAD**2))
    noise = rng.normal(0.0, YEAR_NOISE, len(item_factors))
    years = np.rint(YEAR_CENTRE + YEAR_SPREAD * standard + noise)
    return np.clip(years, 1930, 2025).astype(np.int64)


def _item_categories(
    items: _Items, centres: np.ndarray, topics: tuple[Topic, ...]
) -> list[list[str]]:
    """The primary topic's name, plus the closest other topic when its affinity is high."""
    affinity = items.factors @ centres.T.astype(np.float32)
    rows = np.arange(len(items.topic))
    primary_affinity = affinity[rows, items.topic]
    affinity[rows, items.topic] = -np.inf
    second = affinity.argmax(axis=1)
    has_second = affinity[rows, second] >= SECOND_CATEGORY_RATIO * primary_affinity
    names = [topic.name.capitalize() for topic in topics]
    return [
        [names[first], names[other]] if both else [names[first]]
        for first, other, both in zip(
            items.topic.tolist(), second.tolist(), has_second.tolist(), strict=True
        )
    ]


# ----------------------------------------------------------------------- text


class _WordTable:
    """Words of one kind for all topics, in four spellings, indexed by the same integers.

    Topic vocabularies are flattened so that word ``k`` of topic ``t`` sits at
    ``t * per_topic + k``; looking up spellings by index keeps text generation vectorised.
    """

    def __init__(self, words: list[str], per_topic: int) -> None:
        def article(word: str, capital: bool) -> str:
            vowel = word[:1] in "aeiou"
            return ("An " if vowel else "A ") if capital else ("an " if vowel else "a ")

        self.per_topic = per_topic
        self.plain = np.array(words, dtype=object)
        self.capital = np.array([w[:1].upper() + w[1:] for w in words], dtype=object)
        self.article = np.array([article(w, False) + w for w in words], dtype=object)
        self.capital_article = np.array([article(w, True) + w for w in words], dtype=object)


class _Sentence:
    """The words of a set of rows, by slot name, in the spelling a template asks for."""

    def __init__(self, slots: dict[str, tuple[_WordTable, np.ndarray]], rows: np.ndarray) -> None:
        self.slots = slots
        self.rows = rows

    def _index(self, name: str) -> tuple[_WordTable, np.ndarray]:
        table, index = self.slots[name]
        return table, index[self.rows]

    def word(self, name: str) -> np.ndarray:
        table, index = self._index(name)
        return table.plain[index]

    def capital(self, name: str) -> np.ndarray:
        table, index = self._index(name)
        return table.capital[index]

    def article(self, name: str) -> np.ndarray:
        table, index = self._index(name)
        return table.article[index]

    def capital_article(self, name: str) -> np.ndarray:
        table, index = self._index(name)
        return table.capital_article[index]


# Templates over slots: nouns a-e, adjectives a-b, one verb, two mood words.
TITLE_TEMPLATES = (
    lambda s: s.capital("noun_a") + " of the " + s.word("adjective_a") + " " + s.word("noun_b"),
    lambda s: "The " + s.word("adjective_a") + " " + s.word("noun_a"),
    lambda s: s.capital("adjective_a") + " " + s.word("noun_a") + " and the " + s.word("noun_b"),
    lambda s: s.capital_article("noun_a") + " for the " + s.word("noun_b"),
    lambda s: "Beyond the " + s.word("adjective_a") + " " + s.word("noun_a"),
    lambda s: "Return of the " + s.word("noun_a"),
)
DESCRIPTION_TEMPLATES = (
    lambda s: s.capital_article("mood_a") + ", " + s.word("mood_b") + " story about "
    + s.article("adjective_b") + " " + s.word("noun_c") + " that " + s.word("verb") + " the "
    + s.word("noun_d") + ". Set in a world of " + s.word("noun_e") + " and " + s.word("noun_b")
    + ".",
    lambda s: "When the " + s.word("adjective_b") + " " + s.word("noun_c") + " " + s.word("verb")
    + " the " + s.word("noun_d") + ", everything changes. " + s.capital_article("mood_a")
    + " and " + s.word("mood_b") + " tale of " + s.word("noun_e") + " and " + s.word("noun_a")
    + ".",
    lambda s: s.capital("mood_a") + " and " + s.word("mood_b") + ": " + s.article("adjective_b")
    + " " + s.word("noun_c") + " " + s.word("verb") + " the " + s.word("noun_d")
    + " in search of the " + s.word("noun_e") + ".",
)  # fmt: skip


def _item_texts(
    items: _Items,
    centres: np.ndarray,
    topics: tuple[Topic, ...],
    text_noise: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) titles like "Orbit of the silent galaxy" and (N,) two-sentence descriptions.

    Each word slot takes the primary topic's vocabulary, or with probability ``text_noise``
    another topic's. Two "mood" adjectives name the factors where the item deviates most
    from its topic centre (the sign picks the word); each is random with probability
    ``text_noise``.
    """
    count = len(items.topic)
    num_topics = len(topics)
    nouns = _WordTable([w for t in topics for w in t.nouns], len(topics[0].nouns))
    adjectives = _WordTable([w for t in topics for w in t.adjectives], len(topics[0].adjectives))
    verbs = _WordTable([w for t in topics for w in t.verbs], len(topics[0].verbs))
    moods = _WordTable([w for pair in MOOD_WORDS for w in pair], 2)

    def topical(table: _WordTable) -> tuple[_WordTable, np.ndarray]:
        off_topic = rng.random(count) < text_noise
        other = (items.topic + rng.integers(1, num_topics, count)) % num_topics
        topic = np.where(off_topic, other, items.topic)
        return table, topic * table.per_topic + rng.integers(0, table.per_topic, count)

    slots = {name: topical(nouns) for name in ("noun_a", "noun_b", "noun_c", "noun_d", "noun_e")}
    slots["adjective_a"] = topical(adjectives)
    slots["adjective_b"] = topical(adjectives)
    slots["verb"] = topical(verbs)
    deviation = items.factors - centres[items.topic].astype(np.float32)
    ranked = np.argsort(-np.abs(deviation), axis=1)[:, :2]
    for rank, name in enumerate(("mood_a", "mood_b")):
        factor = ranked[:, rank]
        positive = deviation[np.arange(count), factor] > 0
        noisy = rng.random(count) < text_noise
        factor = np.where(noisy, rng.integers(0, deviation.shape[1], count), factor)
        positive = np.where(noisy, rng.random(count) < 0.5, positive)
        slots[name] = (moods, 2 * (factor % len(MOOD_WORDS)) + positive.astype(np.int64))

    title_choice = rng.integers(0, len(TITLE_TEMPLATES), count)
    description_choice = rng.integers(0, len(DESCRIPTION_TEMPLATES), count)
    titles = _fill_templates(TITLE_TEMPLATES, title_choice, slots)
    descriptions = _fill_templates(DESCRIPTION_TEMPLATES, description_choice, slots)
    return titles, descriptions


def _fill_templates(
    templates: tuple, choice: np.ndarray, slots: dict[str, tuple[_WordTable, np.ndarray]]
) -> np.ndarray:
    """(N,) object array: row i is ``templates[choice[i]]`` filled with row i's words.

    Each template is evaluated once, over the rows that chose it, as elementwise string
    concatenation of object arrays (no Python loop per item).
    """
    result = np.empty(len(choice), dtype=object)
    for index, template in enumerate(templates):
        rows = np.flatnonzero(choice == index)
        if len(rows):
            result[rows] = template(_Sentence(slots, rows))
    return result


# --------------------------------------------------------------------- images


def _glyph_attributes(
    items: _Items, projections: np.ndarray, config: SyntheticDataConfig, rng: np.random.Generator
) -> GlyphAttributes:
    """Shape from the topic; hue, size, stripes, background from projections of z."""
    count = len(items.topic)
    noise = config.image_noise
    # (N, 5) roughly standard-normal scores of fixed projections of the factors.
    scores = items.factors.astype(np.float64) @ projections
    scores = scores / np.sqrt(1.0 + ITEM_SPREAD**2) * np.sqrt(config.num_factors)
    scores = scores + rng.normal(0.0, noise, scores.shape)
    shape = items.topic % len(SHAPES)
    swapped = rng.random(count) < noise / 2
    shape = np.where(swapped, rng.integers(0, len(SHAPES), count), shape)
    # Topics sharing a shape (T > 8) still differ in base hue.
    base_hue = items.topic / config.num_topics
    return GlyphAttributes(
        shape=shape,
        hue=np.mod(base_hue + 0.15 * np.tanh(scores[:, 0]), 1.0),
        size=0.6 + 0.25 * np.tanh(scores[:, 1]),
        centre=rng.normal(0.0, 0.15 * noise, size=(count, 2)).clip(-0.3, 0.3),
        stripe_frequency=3.0 + 2.0 * np.tanh(scores[:, 2]),
        stripe_angle=np.pi / 2 * (1.0 + np.tanh(scores[:, 3])),
        background=0.5 + 0.35 * np.tanh(scores[:, 4]),
    )


# ---------------------------------------------------------------- interactions


def _sample_exposures(
    config: SyntheticDataConfig,
    items: _Items,
    users: _Users,
    centres: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(E,) user and item indices: ``interactions_per_user`` distinct items per user.

    Rows are grouped by user in draw order (the order becomes time order). Duplicates are
    dropped and deficient users redrawn; after :data:`EXPOSURE_ROUNDS` rounds the rest is
    drawn uniformly, which always finishes because ``k <= num_items / 2``.
    """
    per_user = config.interactions_per_user
    num_items, num_topics = config.num_items, config.num_topics
    by_topic = np.argsort(items.topic, kind="stable")
    cumulative = np.cumsum(np.exp(items.log_popularity[by_topic]))
    topic_start = np.searchsorted(items.topic[by_topic], np.arange(num_topics), side="left")
    topic_end = np.searchsorted(items.topic[by_topic], np.arange(num_topics), side="right")
    before = np.concatenate([[0.0], cumulative])
    segment_low = before[topic_start]
    segment_mass = before[topic_end] - segment_low
    taste = config.exposure_preference * (users.factors @ centres.T)
    weights = segment_mass[None, :] * np.exp(taste - taste.max(axis=1, keepdims=True))
    topic_cdf = np.cumsum(weights, axis=1)
    topic_cdf /= topic_cdf[:, -1:]

    def draw(event_users: np.ndarray, preferred: bool) -> np.ndarray:
        if not preferred:
            return rng.integers(0, num_items, len(event_users))
        drawn = np.empty(len(event_users), dtype=np.int64)
        for start in range(0, len(event_users), EVENT_CHUNK):
            part = slice(start, start + EVENT_CHUNK)
            chunk_users = event_users[part]
            uniform = rng.random(len(chunk_users))
            topic = (topic_cdf[chunk_users] < uniform[:, None]).sum(axis=1)
            topic = np.minimum(topic, num_topics - 1)
            target = segment_low[topic] + rng.random(len(chunk_users)) * segment_mass[topic]
            position = np.searchsorted(cumulative, target, side="right")
            position = np.clip(position, topic_start[topic], np.maximum(topic_end[topic] - 1, 0))
            drawn[part] = by_topic[position]
        return drawn

    accepted_users = np.empty(0, dtype=np.int64)
    accepted_items = np.empty(0, dtype=np.int64)
    need = np.full(config.num_users, per_user, dtype=np.int64)
    round_index = 0
    while need.any():
        needy = np.flatnonzero(need)
        draws = np.ceil(need[needy] * 1.3).astype(np.int64) + 2
        new_users = np.repeat(needy, draws)
        new_items = draw(new_users, preferred=round_index < EXPOSURE_ROUNDS)
        is_needy = np.zeros(config.num_users, dtype=bool)
        is_needy[needy] = True
        keep_as_is = ~is_needy[accepted_users]
        # Needy users' accepted rows first, then their new draws; stable sort keeps that order.
        pool_users = np.concatenate([accepted_users[~keep_as_is], new_users])
        pool_items = np.concatenate([accepted_items[~keep_as_is], new_items])
        _, first = np.unique(pool_users * num_items + pool_items, return_index=True)
        first.sort()
        pool_users, pool_items = pool_users[first], pool_items[first]
        grouped = np.argsort(pool_users, kind="stable")
        pool_users, pool_items = pool_users[grouped], pool_items[grouped]
        rank = np.arange(len(pool_users)) - np.searchsorted(pool_users, pool_users, side="left")
        chosen = rank < per_user
        accepted_users = np.concatenate([accepted_users[keep_as_is], pool_users[chosen]])
        accepted_items = np.concatenate([accepted_items[keep_as_is], pool_items[chosen]])
        need = per_user - np.bincount(accepted_users, minlength=config.num_users)
        round_index += 1
    if round_index > 1:
        grouped = np.argsort(accepted_users, kind="stable")
        accepted_users, accepted_items = accepted_users[grouped], accepted_items[grouped]
    logger.debug("exposure sampling took %d rounds", round_index)
    return accepted_users, accepted_items


def _click_logits(
    config: SyntheticDataConfig,
    items: _Items,
    users: _Users,
    event_users: np.ndarray,
    event_items: np.ndarray,
) -> np.ndarray:
    """(E,) float32 ``click_scale * u.z + b_i + click_bias``, computed in chunks."""
    logits = np.empty(len(event_users), dtype=np.float32)
    for start in range(0, len(event_users), EVENT_CHUNK):
        part = slice(start, start + EVENT_CHUNK)
        affinity = np.einsum(
            "ij,ij->i", users.factors[event_users[part]], items.factors[event_items[part]]
        )
        logits[part] = config.click_scale * affinity + items.bias[event_items[part]]
    logits += np.float32(config.click_bias)
    return logits


def _timestamps(event_users: np.ndarray, num_users: int, rng: np.random.Generator) -> np.ndarray:
    """(E,) int64 seconds, strictly increasing within each user (rows grouped by user)."""
    user_start = START_TIMESTAMP + rng.integers(0, USER_START_SPAN_S, num_users)
    gaps = np.ceil(rng.exponential(MEAN_GAP_S, len(event_users))).astype(np.int64) + 1
    elapsed = np.cumsum(gaps)
    first_row = np.searchsorted(event_users, np.arange(num_users), side="left")
    offset = np.concatenate([[0], elapsed])[first_row]
    return user_start[event_users] + elapsed - offset[event_users]
