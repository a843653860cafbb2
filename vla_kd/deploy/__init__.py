"""Deploy a policy to a robot through a ROS 2 rosbridge server (roslibpy client).

Inference only: nothing here imports a simulator. ``safety`` clips and vets every command,
``messages`` converts between rosbridge JSON and the policy contract, ``node`` runs the control
loop with its watchdog, and ``bridge`` starts a local rosbridge server (tests, benchmarks).
"""
