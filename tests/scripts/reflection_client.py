"""A gRPC client with no generated code: it finds ebb.v1.AdminService by
server reflection (grpcio-reflection speaks v1alpha) over mTLS and calls
DescribeScalingGroups with message classes built from what it learned.

usage: reflection_client.py ADDR CA CERT KEY
prints the services it found, then one line per group: NAME DESIRED
"""
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    addr, ca, cert, key = sys.argv[1:5]
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )
    # The controller's certificate names localhost (and its addresses).
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(addr, creds, options=options) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        print("services:", " ".join(sorted(services)))
        pool = DescriptorPool(db)
        admin = pool.FindServiceByName("ebb.v1.AdminService")
        method = admin.FindMethodByName("DescribeScalingGroups")
        request = GetMessageClass(method.input_type)
        response = GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/ebb.v1.AdminService/DescribeScalingGroups",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        answer = call(request(), timeout=30)
        for group in answer.scaling_groups:
            print(group.name, group.desired_capacity)


if __name__ == "__main__":
    main()
