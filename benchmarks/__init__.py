"""Quality and speed scripts that print markdown tables (an installed package, so each runs as a script too)."""
