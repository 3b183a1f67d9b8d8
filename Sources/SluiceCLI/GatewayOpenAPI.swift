import Foundation
import Pipelines

/// The OpenAPI 3.1 document of `sluice gateway`, served at `GET /openapi.json`.
enum GatewayOpenAPI {
    /// A pipeline the document describes: its name and, when this executable has it, its input's JSON Schema.
    struct Served {
        var name: String
        var inputSchema: JSONValue?
    }

    /// The document: one operation per pipeline of `pipelines` (the body's schema their input's, where known), or,
    /// when none is given, one for any pipeline name (the body any JSON value).
    static func document(pipelines: [Served], maxBodyBytes: Int) -> String {
        let operations: [String]
        if pipelines.isEmpty {
            operations = [
                invoke(
                    path: "/v1/pipelines/{name}/invoke", operationID: "invoke",
                    nameParameter: #"{"type": "string", "pattern": "^[A-Za-z0-9._-]{1,200}$"}"#, inputSchema: nil)
            ]
        } else {
            operations = pipelines.map { pipeline in
                invoke(
                    path: "/v1/pipelines/\(pipeline.name)/invoke", operationID: "invoke-\(pipeline.name)",
                    nameParameter: nil, inputSchema: pipeline.inputSchema)
            }
        }
        return template.replacingOccurrences(of: "INVOKE_PATHS", with: operations.joined(separator: ",\n") + ",")
            .replacingOccurrences(of: "MAX_BODY_BYTES", with: String(maxBodyBytes))
    }

    /// The path item of one invoke operation.
    private static func invoke(
        path: String, operationID: String, nameParameter: String?, inputSchema: JSONValue?
    )
        -> String
    {
        var schema = "{}"
        if let inputSchema {
            var writer = JSONWriter()
            writer.value(inputSchema)
            schema = String(decoding: writer.bytes, as: UTF8.self)
        }
        return invokeTemplate.replacingOccurrences(of: "PATH", with: path)
            .replacingOccurrences(of: "OPERATION_ID", with: operationID)
            .replacingOccurrences(
                of: "NAME_PARAMETER",
                with: nameParameter.map {
                    #"{"name": "name", "in": "path", "required": true, "description": "The pipeline.", "schema": "# + $0
                        + "}, "
                } ?? ""
            )
            .replacingOccurrences(of: "BODY_SCHEMA", with: schema)
            .replacingOccurrences(
                of: "BODY_DESCRIPTION",
                with: inputSchema == nil
                    ? "The pipeline's input: any JSON value here; its workers check its type (400 when it is not)."
                    : "The pipeline's input.")
    }

    private static let invokeTemplate = #"""
        "PATH": {
              "post": {
                "operationId": "OPERATION_ID",
                "summary": "Run a pipeline on one input and answer its response",
                "parameters": [
                  NAME_PARAMETER{"name": "sluice-request-id", "in": "header", "required": false, "description": "The request id (default: a random one), echoed in the response.", "schema": {"type": "string", "pattern": "^[!-~]{1,256}$"}},
                  {"name": "traceparent", "in": "header", "required": false, "description": "W3C trace context: the worker's span of the request is its child.", "schema": {"type": "string"}},
                  {"name": "Prefer", "in": "header", "required": false, "description": "RFC 7240: respond-async answers 202 at once (the response goes to the pipeline's responses topic); wait=N waits N seconds for the response (at most the gateway's --max-timeout).", "schema": {"type": "string"}}
                ],
                "requestBody": {
                  "required": true,
                  "description": "BODY_DESCRIPTION",
                  "content": {"application/json": {"schema": BODY_SCHEMA}}
                },
                "responses": {
                  "200": {"$ref": "#/components/responses/Answer"},
                  "202": {
                    "description": "The request is on the requests topic (Prefer: respond-async).",
                    "headers": {"sluice-request-id": {"$ref": "#/components/headers/RequestID"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}
                  },
                  "400": {"$ref": "#/components/responses/Error"},
                  "404": {"$ref": "#/components/responses/Error"},
                  "409": {"$ref": "#/components/responses/Error"},
                  "413": {"$ref": "#/components/responses/Error"},
                  "415": {"$ref": "#/components/responses/Error"},
                  "500": {"$ref": "#/components/responses/Error"},
                  "502": {"$ref": "#/components/responses/Error"},
                  "503": {"$ref": "#/components/responses/Unavailable"},
                  "504": {"$ref": "#/components/responses/Error"}
                }
              }
            }
        """#

    private static let template = #"""
        {
          "openapi": "3.1.0",
          "info": {
            "title": "Sluice gateway",
            "version": "1",
            "description": "Calls Sluice pipelines over HTTP: each call becomes a request on the pipeline's Kafka requests topic, served by the pipeline's workers. Bodies are the pipeline's input as JSON, at most MAX_BODY_BYTES bytes. Every answer but 202 and the probes is the response object of the wire protocol; an error the gateway answers itself has capture null."
          },
          "paths": {
            INVOKE_PATHS
            "/health": {
              "get": {
                "operationId": "health",
                "summary": "Liveness: 503 when the gateway's Kafka consumer stopped polling",
                "responses": {"200": {"$ref": "#/components/responses/Health"}, "503": {"$ref": "#/components/responses/Health"}}
              }
            },
            "/ready": {
              "get": {
                "operationId": "ready",
                "summary": "Readiness: 200 once the gateway reads a reply partition",
                "responses": {"200": {"$ref": "#/components/responses/Health"}, "503": {"$ref": "#/components/responses/Health"}}
              }
            },
            "/metrics": {
              "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}}}
              }
            },
            "/openapi.json": {
              "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}
              }
            }
          },
          "components": {
            "headers": {
              "RequestID": {"description": "The request id.", "schema": {"type": "string"}},
              "Traceparent": {"description": "The worker's span of the request (W3C trace context).", "schema": {"type": "string"}}
            },
            "responses": {
              "Answer": {
                "description": "The pipeline's response (status ok).",
                "headers": {"sluice-request-id": {"$ref": "#/components/headers/RequestID"}, "traceparent": {"$ref": "#/components/headers/Traceparent"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}}}
              },
              "Error": {
                "description": "An error response: from a worker (400 invalid_input, 413 payload_too_large, 504 deadline_exceeded, 500 internal, 502 step_failed or a step's own code), or from the gateway (capture null: 400 invalid_input, 404 unknown_pipeline, 409 duplicate_request_id, 413 payload_too_large, 415 unsupported_media_type, 504 timeout).",
                "headers": {"sluice-request-id": {"$ref": "#/components/headers/RequestID"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}}}
              },
              "Unavailable": {
                "description": "The gateway cannot call now (unavailable: joining its group, too many calls waiting, Kafka refused the request); try again after Retry-After.",
                "headers": {"sluice-request-id": {"$ref": "#/components/headers/RequestID"}, "Retry-After": {"description": "Seconds.", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}}}
              },
              "Health": {
                "description": "The gateway's state.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}
              }
            },
            "schemas": {
              "Response": {
                "type": "object",
                "required": ["request_id", "pipeline", "status", "output", "error", "run_id", "capture", "duration_ms"],
                "properties": {
                  "request_id": {"type": ["string", "null"]},
                  "pipeline": {"type": ["string", "null"]},
                  "status": {"enum": ["ok", "error"]},
                  "output": {"description": "The pipeline's output; null on error."},
                  "error": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/ErrorDetail"}]},
                  "run_id": {"type": ["string", "null"], "description": "The run in the lineage store, if it was tracked."},
                  "capture": {"type": ["string", "null"], "description": "The worker's capture mode; null when the gateway answered itself."},
                  "duration_ms": {"type": "number"}
                }
              },
              "ErrorDetail": {
                "type": "object",
                "required": ["code", "message", "step"],
                "properties": {
                  "code": {"type": "string"},
                  "message": {"type": "string"},
                  "step": {"type": ["string", "null"]}
                }
              },
              "Accepted": {
                "type": "object",
                "required": ["request_id", "pipeline", "status", "responses_topic"],
                "properties": {
                  "request_id": {"type": "string"},
                  "pipeline": {"type": "string"},
                  "status": {"const": "accepted"},
                  "responses_topic": {"type": "string", "description": "The Kafka topic the response goes to."}
                }
              },
              "Health": {
                "type": "object",
                "required": ["status", "reply_partitions", "waiting"],
                "properties": {
                  "status": {"enum": ["serving", "joining", "not_polling"]},
                  "reply_partitions": {"type": "integer"},
                  "waiting": {"type": "integer"}
                }
              }
            }
          }
        }
        """#
}
