"""The configuration and modeling files a Nemotron-NAS checkpoint carries for transformers' ``trust_remote_code``.

``painters deploy nemotron-nas`` copies both files beside the weights and names them in ``auto_map``; they import
only torch and transformers (and each other), so the checkpoint loads without painters installed.
"""
