//! The GraphQL specification's "Handling Field Errors", which clients of the existing
//! (graphql-java) service rely on: a field that fails is `null`, the null propagates up to
//! the nearest nullable position only, and the rest of `data` stands.
//!
//! async-graphql 7 instead leaves a failed field's key out of its object (and an object whose
//! every field failed becomes `null`). This module mends the response after execution: for
//! each error with a path it finds, from the document and the schema, the nearest nullable
//! position on that path and sets it to `null`.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
    TypeKind, TypeSystemDefinition,
};
use async_graphql::{PathSegment, Response, Value};

/// The declared type of every object field: `(type, field)` → type.
pub struct FieldTypes(HashMap<(String, String), Type>);

impl FieldTypes {
    pub fn of(schema: &super::OrderSchema) -> Self {
        let mut fields = HashMap::new();
        // The SDL the schema prints always parses; if it ever did not, no error would be
        // mended, which is the behaviour of async-graphql itself.
        if let Ok(document) = async_graphql::parser::parse_schema(schema.sdl()) {
            for definition in document.definitions {
                let TypeSystemDefinition::Type(ty) = definition else {
                    continue;
                };
                let TypeKind::Object(object) = &ty.node.kind else {
                    continue;
                };
                for field in &object.fields {
                    fields.insert(
                        (
                            ty.node.name.node.to_string(),
                            field.node.name.node.to_string(),
                        ),
                        field.node.ty.node.clone(),
                    );
                }
            }
        }
        Self(fields)
    }
}

/// Sets the nearest nullable position of every field error to `null`.
pub fn propagate(
    response: &mut Response,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    types: &FieldTypes,
) {
    let Some((root_type, selection)) = operation(document, operation_name) else {
        return;
    };
    let mut targets: Vec<&[PathSegment]> = response
        .errors
        .iter()
        .filter(|e| !e.path.is_empty())
        .filter_map(|e| {
            let nullable = nullability(&e.path, root_type, selection, document, types)?;
            // The deepest nullable position on the path; none means `data` itself.
            let depth = nullable.iter().rposition(|n| *n).map_or(0, |i| i + 1);
            Some(&e.path[..depth])
        })
        .collect();
    targets.sort_by_key(|path| path.len());
    let mut done: Vec<&[PathSegment]> = Vec::new();
    for target in targets {
        if done.iter().any(|d| target.starts_with(d)) {
            continue;
        }
        if target.is_empty() {
            response.data = Value::Null;
            return;
        }
        set_null(&mut response.data, target);
        done.push(target);
    }
}

fn operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<(&'static str, &'a SelectionSet)> {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let root = match operation.node.ty {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
        OperationType::Subscription => return None,
    };
    Some((root, &operation.node.selection_set.node))
}

/// Whether each position of `path` may be null, or `None` when the path does not follow the
/// document (then the error is left alone).
fn nullability(
    path: &[PathSegment],
    root_type: &str,
    root: &SelectionSet,
    document: &ExecutableDocument,
    types: &FieldTypes,
) -> Option<Vec<bool>> {
    let mut out = Vec::with_capacity(path.len());
    let mut parent = root_type.to_owned();
    let mut selections = vec![root];
    let mut current: Option<&Type> = None;
    for segment in path {
        match segment {
            PathSegment::Field(key) => {
                let (name, subselections) = field_by_key(&selections, key, document);
                let ty = types.0.get(&(parent.clone(), name?))?;
                out.push(ty.nullable);
                selections = subselections;
                current = Some(ty);
            }
            PathSegment::Index(_) => {
                let BaseType::List(item) = &current?.base else {
                    return None;
                };
                out.push(item.nullable);
                current = Some(item);
            }
        }
        if let Some(BaseType::Named(name)) = current.map(|t| &t.base) {
            parent = name.to_string();
        }
    }
    Some(out)
}

/// The field name behind response key `key` in `selections`, and the selection sets under
/// it (fields with one key merge, possibly through fragments).
fn field_by_key<'a>(
    selections: &[&'a SelectionSet],
    key: &str,
    document: &'a ExecutableDocument,
) -> (Option<String>, Vec<&'a SelectionSet>) {
    let mut name = None;
    let mut under = Vec::new();
    let mut pending: Vec<&SelectionSet> = selections.to_vec();
    while let Some(set) = pending.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    if field.node.response_key().node.as_str() == key {
                        name = Some(field.node.name.node.to_string());
                        under.push(&field.node.selection_set.node);
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node)
                    {
                        pending.push(&fragment.node.selection_set.node);
                    }
                }
                Selection::InlineFragment(inline) => {
                    pending.push(&inline.node.selection_set.node);
                }
            }
        }
    }
    (name, under)
}

/// Sets `path` in `data` to null. An object async-graphql collapsed to `null` because every
/// field of it failed is rebuilt on the way, so that its fields can each be `null`.
fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, ancestors)) = path.split_last() else {
        return;
    };
    let mut node = data;
    for segment in ancestors {
        node = match (segment, node) {
            (PathSegment::Field(key), node) => {
                if matches!(node, Value::Null) {
                    *node = Value::Object(async_graphql::indexmap::IndexMap::new());
                }
                let Value::Object(map) = node else { return };
                map.entry(async_graphql::Name::new(key))
                    .or_insert(Value::Null)
            }
            (PathSegment::Index(i), Value::List(items)) => match items.get_mut(*i) {
                Some(item) => item,
                None => return,
            },
            (PathSegment::Index(_), _) => return,
        };
    }
    match (last, node) {
        (PathSegment::Field(key), node) => {
            if matches!(node, Value::Null) {
                *node = Value::Object(async_graphql::indexmap::IndexMap::new());
            }
            if let Value::Object(map) = node {
                map.insert(async_graphql::Name::new(key), Value::Null);
            }
        }
        (PathSegment::Index(i), Value::List(items)) => {
            if let Some(item) = items.get_mut(*i) {
                *item = Value::Null;
            }
        }
        (PathSegment::Index(_), _) => {}
    }
}
