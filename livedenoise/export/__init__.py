"""export subpackage."""
