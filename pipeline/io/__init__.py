"""One reader (and writer) per raw-scan format; `registry` picks the right one for a path."""
