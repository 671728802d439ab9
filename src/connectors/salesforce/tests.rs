//! Tests for the Salesforce connector against wiremock.
