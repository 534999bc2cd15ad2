# The autograder image for Gradescope's "manual Docker configuration" (and for `notegrade grade --docker`).
# Build context: the unpacked autograder zip made by `notegrade build` (setup.sh, run_autograder,
# requirements.txt, rubric.toml, heldout.safetensors, autograder/, ...):
#
#   notegrade build --rubric rubrics/fall2024_a2.toml --heldout heldout.safetensors --out autograder.zip
#   mkdir ctx && cd ctx && unzip ../autograder.zip && docker build -f ../Dockerfile -t my-autograder .
#
# Gradescope's layout: the zip's files in /autograder/source, run_autograder copied to
# /autograder/run_autograder, setup.sh run once at build time.  CMD and ENTRYPOINT stay the base
# image's: Gradescope starts /autograder/run_autograder itself.
ARG BASE_IMAGE=gradescope/autograder-base:latest
FROM ${BASE_IMAGE}

COPY . /autograder/source/
RUN bash /autograder/source/setup.sh \
    && cp /autograder/source/run_autograder /autograder/run_autograder \
    && chmod 755 /autograder/run_autograder \
    && mkdir -p /autograder/submission /autograder/results
WORKDIR /autograder
