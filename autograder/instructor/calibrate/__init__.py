"""`notegrade calibrate` (command): what each common student mistake (cases) costs under an autograder."""
