"""moto_server, with one fix to its Step Functions interpreter: the
parameters of a service integration (`arn:aws:states:::states:startExecution`
and the like) reach boto in their ASL spelling (`StateMachineArn`), which
botocore cannot serialise, so every such task fails with States.Runtime
`'StateMachineArn'`. moto's interpreter is ported from LocalStack's, whose
`StateTaskService._normalise_parameters` maps them onto the operation's input
shape with `_to_boto_request`; moto 5.2 left that method empty. This puts the
mapping back (nothing else changes: the state machine, its history and the
started execution are moto's own). Used by tests/infra/test_statemachine.py;
drop it once moto maps the parameters itself (the test then still passes).

Usage: python moto_sfn_server.py -p PORT   (with MOTO_PORT=PORT: the
interpreter calls the server back on that port)
"""
import sys

import botocore.session
from moto.server import main
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service as sts

_models = {}


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    service = self._get_boto_service_name(boto_service_name=boto_service_name)
    action = self._get_boto_service_action(service_action_name=service_action_name)
    if service not in _models:
        _models[service] = botocore.session.get_session().get_service_model(service)
    model = _models[service]
    operation = next(op for op in model.operation_names if sts.camel_to_snake_case(op) == action)
    self._to_boto_request(parameters, model.operation_model(operation).input_shape)


sts.StateTaskService._normalise_parameters = _normalise_parameters

if __name__ == "__main__":
    sys.exit(main())
