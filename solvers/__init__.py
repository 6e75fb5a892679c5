"""FEniCSx forward models and data-set generators (dolfinx, mpi4py, petsc4py; never torch).

Each problem module exposes ``PROBLEM_NAME``, ``load_recipe(preset, config_file,
overrides)`` and ``make_problem(recipe)`` returning a
:class:`pdegrow.generation.ForwardProblem`.
"""
