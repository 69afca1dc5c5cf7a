"""Compute-node side of cyberft: training entrypoints, evaluation and their helpers.

Each entrypoint exposes ``main(cfg, method_name, exp_dir)`` and reads top to
bottom (config, setup, data, model, train, save).
"""
