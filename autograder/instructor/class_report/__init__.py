"""`notegrade report` (command: its options only): grades.csv -> a single-file HTML class report (page: write_class_report)."""
