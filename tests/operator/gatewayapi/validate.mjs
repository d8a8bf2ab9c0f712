// Reads a JSON list of Gateway API objects on stdin; prints a JSON list of [index, error message] for each one
// the Gateway API's schema (@kubernetes-models/gateway-api, generated from its Go API types) rejects.
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";

const kinds = { "gateway.networking.k8s.io/v1 HTTPRoute": HTTPRoute };
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const errors = [];
JSON.parse(Buffer.concat(chunks).toString("utf8")).forEach((object, index) => {
  const model = kinds[`${object.apiVersion} ${object.kind}`];
  if (model === undefined) {
    errors.push([index, `no schema for ${object.apiVersion} ${object.kind}`]);
    return;
  }
  try {
    new model(object).validate();
  } catch (error) {
    errors.push([index, String(error.message)]);
  }
});
process.stdout.write(JSON.stringify(errors));
