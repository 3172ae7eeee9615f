"""What raters score: the reference study's five criteria plus an overall score, each 1-10."""

from __future__ import annotations

# (CSV column, wording shown to the rater). The overall score is the leaderboard's human rating.
CRITERIA = (
    ("grammar_style", "Grammar and style"),
    ("coherence", "Logical coherence"),
    ("relevance", "Relevance"),
    ("accuracy", "Scientific accuracy"),
    ("creativity", "Creativity"),
    ("overall", "Overall"),
)
CRITERION_KEYS = tuple(key for key, _ in CRITERIA)
OVERALL = "overall"
MIN_SCORE, MAX_SCORE = 1, 10
# The CSV the review page exports (one row per rated completion) and `review import` reads.
RATINGS_COLUMNS = ("review", "rater", "document", "label", *CRITERION_KEYS)
# The reference study's spreadsheet layout, also accepted by `review import`.
REFERENCE_COLUMNS = ("paper", "model", "rater", "score", "source", "category")
