"""Operations that chain training, publishing and backfill (``retrain.py``: ``idproxy realign``)."""
