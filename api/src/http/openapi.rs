//! Corrections of the generated OpenAPI document, so that it says what
//! the API really answers and accepts: error bodies on every operation, and
//! bodies that serde flattens written as the one object they are.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{AllOf, Object, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

/// Documents on every operation what any of them may answer besides its
/// own responses: a problem+json 4xx (malformed request, authentication,
/// authorization, refusal) and 503 `database_unavailable`; the 4xx and 5xx
/// responses an operation names get the problem+json body too.
pub struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response {
                        if status.starts_with(['4', '5']) && response.content.is_empty() {
                            *response = problem(&response.description);
                        }
                    }
                }
                responses
                    .entry("4XX".into())
                    .or_insert_with(|| problem("the request was refused; `code` says why").into());
                responses.entry("503".into()).or_insert_with(|| problem("database_unavailable: try again").into());
            }
        }
    }
}

/// A problem+json response.
fn problem(description: &str) -> Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    ResponseBuilder::new().description(description).content("application/problem+json", content).build()
}

/// Writes each schema that `#[serde(flatten)]` made an `allOf` of objects
/// as the one object it is on the wire. Left as `allOf`, a flattened body
/// that refuses unknown fields (`additionalProperties: false`) forbids the
/// fields of its other half, and no request could match it.
pub struct FlattenedBodies;

impl utoipa::Modify for FlattenedBodies {
    fn modify(&self, openapi: &mut OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let schemas = components.schemas.clone();
        for schema in components.schemas.values_mut() {
            if let RefOr::T(Schema::AllOf(all_of)) = schema {
                if let Some(merged) = merged(all_of, &schemas) {
                    *schema = RefOr::T(Schema::Object(merged));
                }
            }
        }
    }
}

/// The objects of `all_of` as one, or None when a part is not an object.
fn merged(all_of: &AllOf, schemas: &BTreeMap<String, RefOr<Schema>>) -> Option<Object> {
    let mut merged = Object::with_type(Type::Object);
    merged.description = all_of.description.clone();
    for part in &all_of.items {
        let object = match part {
            RefOr::T(Schema::Object(object)) => object,
            RefOr::Ref(r) => match schemas.get(r.ref_location.trim_start_matches("#/components/schemas/")) {
                Some(RefOr::T(Schema::Object(object))) => object,
                _ => return None,
            },
            _ => return None,
        };
        merged.properties.extend(object.properties.clone());
        merged.required.extend(object.required.iter().cloned());
        if object.additional_properties.is_some() {
            merged.additional_properties = object.additional_properties.clone();
        }
    }
    Some(merged)
}
