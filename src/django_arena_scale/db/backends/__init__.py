"""Database backends of django-arena-scale (``ENGINE`` paths)."""
