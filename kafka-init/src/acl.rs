//! Who may do what on the broker (decision 0028): the access of each service's principal,
//! as a table, and its creation through librdkafka's CreateAcls.
//!
//! The table is the whole policy. A consumer may read its input topic and its own group
//! (and the groups named after it: its replay reader's), and read and write its dead-letter
//! topic; only the relay may write the event topics; the `dlq` tool may read every
//! dead-letter topic and write an event back onto its topic (a redrive). Nothing else is
//! granted, and the broker refuses what no ACL allows.

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka_sys::bindings as ffi;

/// The names a deployment gives its topics and consumer groups.
pub struct Names {
    pub orders: String,
    pub inventory: String,
    pub order_group: String,
    pub inventory_group: String,
    pub notifications_group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Topic,
    /// A consumer group, and every group whose name starts with it.
    GroupsFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Consume (implies Describe).
    Read,
    /// Produce (implies Describe).
    Write,
}

/// One allowed operation of one principal on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub principal: &'static str,
    pub resource: Resource,
    pub name: String,
    pub operation: Operation,
}

/// Every grant the system's principals need, and nothing more.
pub fn grants(names: &Names) -> Vec<Grant> {
    use Operation::{Read, Write};
    use Resource::{GroupsFrom, Topic};
    let topic =
        |principal, name: &str, operation| Grant { principal, resource: Topic, name: name.to_owned(), operation };
    let groups =
        |principal, name: &str| Grant { principal, resource: GroupsFrom, name: name.to_owned(), operation: Read };
    let dlq = schema::topics::dead_letter;
    let consumer = |principal, input: &str, group: &str| {
        vec![
            topic(principal, input, Read),
            groups(principal, group),
            topic(principal, &dlq(input), Read),
            topic(principal, &dlq(input), Write),
        ]
    };
    let mut all = vec![topic("relay", &names.orders, Write), topic("relay", &names.inventory, Write)];
    all.extend(consumer("order", &names.inventory, &names.order_group));
    all.extend(consumer("inventory", &names.orders, &names.inventory_group));
    for input in [&names.orders, &names.inventory] {
        all.extend(consumer("notifications", input, &names.notifications_group));
        all.extend([topic("dlq", &dlq(input), Read), topic("dlq", input, Write)]);
    }
    all.push(groups("dlq", "dlq-"));
    all.dedup();
    all
}

/// Creates `grants` on the cluster `admin` talks to (an existing ACL is left as it is). The
/// client must be a super user's (or hold ALTER on the cluster).
pub fn create(admin: &AdminClient<DefaultClientContext>, grants: &[Grant], timeout: Duration) -> anyhow::Result<()> {
    let mut bindings = Bindings(Vec::with_capacity(grants.len()));
    for grant in grants {
        bindings.0.push(binding(grant)?);
    }
    let client = admin.inner().native_ptr();
    #[allow(unsafe_code)]
    // SAFETY: `client` stays valid while `admin` is borrowed; the queue and the event are
    // destroyed here, the bindings by `Bindings`' drop; librdkafka copies what it keeps.
    unsafe {
        let queue = ffi::rd_kafka_queue_new(client);
        ffi::rd_kafka_CreateAcls(client, bindings.0.as_mut_ptr(), bindings.0.len(), std::ptr::null(), queue);
        let event = ffi::rd_kafka_queue_poll(queue, i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX));
        ffi::rd_kafka_queue_destroy(queue);
        if event.is_null() {
            bail!("the broker did not answer the ACL request within {timeout:?}");
        }
        let outcome = read_result(event);
        ffi::rd_kafka_event_destroy(event);
        outcome
    }
}

/// Whether the request and every ACL in it succeeded.
#[allow(unsafe_code)]
unsafe fn read_result(event: *mut ffi::rd_kafka_event_t) -> anyhow::Result<()> {
    // SAFETY (for the whole body): `event` is a live CreateAcls result owned by the caller;
    // the strings and results read here belong to it and are copied before it goes.
    unsafe {
        if ffi::rd_kafka_event_error(event) != ffi::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("creating ACLs failed: {}", text(ffi::rd_kafka_event_error_string(event)));
        }
        let result = ffi::rd_kafka_event_CreateAcls_result(event);
        if result.is_null() {
            bail!("the broker's answer was not an ACL result");
        }
        let mut count = 0;
        let results = ffi::rd_kafka_CreateAcls_result_acls(result, &raw mut count);
        for i in 0..count {
            let error = ffi::rd_kafka_acl_result_error(*results.add(i));
            if !error.is_null() {
                bail!("an ACL was refused: {}", text(ffi::rd_kafka_error_string(error)));
            }
        }
        Ok(())
    }
}

fn binding(grant: &Grant) -> anyhow::Result<*mut ffi::rd_kafka_AclBinding_t> {
    let (kind, pattern) = match grant.resource {
        Resource::Topic => (
            ffi::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            ffi::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        ),
        Resource::GroupsFrom => (
            ffi::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
            ffi::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
        ),
    };
    let operation = match grant.operation {
        Operation::Read => ffi::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => ffi::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
    };
    let name = CString::new(grant.name.as_str()).context("a resource name holds a NUL")?;
    let principal = CString::new(format!("User:{}", grant.principal)).context("a principal holds a NUL")?;
    let host = c"*";
    let mut error = [0 as c_char; 512];
    #[allow(unsafe_code)]
    // SAFETY: every pointer is to a NUL-terminated string or buffer that outlives the call;
    // librdkafka copies the strings into the binding it returns.
    let made = unsafe {
        ffi::rd_kafka_AclBinding_new(
            kind,
            name.as_ptr(),
            pattern,
            principal.as_ptr(),
            host.as_ptr(),
            operation,
            ffi::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if made.is_null() {
        #[allow(unsafe_code)]
        // SAFETY: librdkafka wrote a NUL-terminated message into `error`.
        let message = unsafe { text(error.as_ptr()) };
        bail!("ACL for {grant:?} not accepted: {message}");
    }
    Ok(made)
}

/// The bindings handed to CreateAcls, destroyed whatever happens.
struct Bindings(Vec<*mut ffi::rd_kafka_AclBinding_t>);

impl Drop for Bindings {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: each pointer came from rd_kafka_AclBinding_new and is destroyed once.
        unsafe {
            ffi::rd_kafka_AclBinding_destroy_array(self.0.as_mut_ptr(), self.0.len());
        }
    }
}

/// A C string from librdkafka, as text.
#[allow(unsafe_code)]
unsafe fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka's strings are NUL-terminated and live as long as their owner.
    unsafe { CStr::from_ptr(pointer) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::{Names, Operation, Resource, grants};

    fn names() -> Names {
        Names {
            orders: "o".into(),
            inventory: "i".into(),
            order_group: "og".into(),
            inventory_group: "ig".into(),
            notifications_group: "ng".into(),
        }
    }

    fn writers(topic: &str) -> Vec<&'static str> {
        let mut who: Vec<_> = grants(&names())
            .into_iter()
            .filter(|g| g.resource == Resource::Topic && g.name == topic && g.operation == Operation::Write)
            .map(|g| g.principal)
            .collect();
        who.sort_unstable();
        who
    }

    #[test]
    fn only_the_relay_and_a_redrive_write_the_event_topics() {
        assert_eq!(writers("o"), ["dlq", "relay"]);
        assert_eq!(writers("i"), ["dlq", "relay"]);
    }

    #[test]
    fn a_consumer_reads_its_input_and_writes_only_its_dead_letters() {
        let order: Vec<_> = grants(&names()).into_iter().filter(|g| g.principal == "order").collect();
        let topics: Vec<_> =
            order.iter().filter(|g| g.resource == Resource::Topic).map(|g| (g.name.as_str(), g.operation)).collect();
        assert_eq!(topics, [("i", Operation::Read), ("i.dlq", Operation::Read), ("i.dlq", Operation::Write)]);
        assert!(order.iter().any(|g| g.resource == Resource::GroupsFrom && g.name == "og"));
    }
}
