"""`notegrade calibrate` (command: its options only): what each common student mistake (cases) costs under an autograder (calibration: grade them all, tabulate)."""
