"""``ENGINE = 'django_arena_scale.db.backends.postgresql'``: a read replica's backend."""
