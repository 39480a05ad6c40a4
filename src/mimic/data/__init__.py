"""Tasks, their normalized tables, and demonstration sampling."""
