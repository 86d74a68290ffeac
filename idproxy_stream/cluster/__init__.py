"""Running on a multi-node Ray cluster: actor placement and the set-up of submitted jobs."""
