//! Simulated Salesforce REST API.
