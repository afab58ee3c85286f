"""vL3: endpoints on several hosts that together serve one virtual L3 network.

Each vL3 endpoint holds a subnet of the service's prefix (`subnets`), routes between its
clients and the other endpoints in a namespace of its own (`router`), keeps a vWire to
every other endpoint of the service (nsmd/manager/vl3mesh.py), addresses its clients
(nsmd/manager/vl3ipam.py) and answers DNS for the service's zone (`dns`).
"""
