"""One help content module per registered panel; `registry` collects them."""
