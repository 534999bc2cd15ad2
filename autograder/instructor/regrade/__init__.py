"""`notegrade regrade` (command): a Gradescope export graded again; jobs: which submissions to grade and reuse; outputs: grades.csv, reports, the Gradescope upload."""
