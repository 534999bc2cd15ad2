"""`notegrade report` (command): grades.csv -> a single-file HTML class report."""
