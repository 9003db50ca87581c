//! The mocks mounted on one backend: which one answers a request, and how often each did.

use super::{Mock, Responder, Times};
use crate::backend_request::BackendRequest;

/// A backend's mocks, in the order they were mounted.
#[derive(Default)]
pub(crate) struct MockSet {
    mocks: Vec<Mounted>,
}

struct Mounted {
    mock: Mock,
    hits: u64,
}

/// A mock whose expectation was not met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unmet {
    pub mock: String,
    pub expected: Times,
    pub hits: u64,
}

impl MockSet {
    pub(crate) fn mount(&mut self, mock: Mock) {
        self.mocks.push(Mounted { mock, hits: 0 });
    }

    /// The answer to `request`: from the first mock, in mounting order, that matches it and
    /// is not used up (`up_to_n_times`), which counts the call. `None`: no mock matched.
    pub(crate) fn choose(&mut self, request: &BackendRequest) -> Option<Responder> {
        let chosen = self.mocks.iter_mut().find(|m| {
            m.mock.max_uses.is_none_or(|max| m.hits < max)
                && m.mock.matchers.iter().all(|c| c.matches(request))
        })?;
        chosen.hits += 1;
        Some(chosen.mock.responder.clone())
    }

    /// Each mounted mock, described, with how often it answered.
    pub(crate) fn usage(&self) -> Vec<(String, u64)> {
        self.mocks
            .iter()
            .map(|m| (m.mock.describe(), m.hits))
            .collect()
    }

    /// The mocks whose expectation (`expect`) was not met.
    pub(crate) fn unmet(&self) -> Vec<Unmet> {
        self.mocks
            .iter()
            .filter_map(|m| {
                let expected = m.mock.expected?;
                (!expected.contains(m.hits)).then(|| Unmet {
                    mock: m.mock.describe(),
                    expected,
                    hits: m.hits,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::Reply;
    use crate::mock::matchers::{any, path};

    fn request(path: &str) -> BackendRequest {
        BackendRequest {
            backend: "api".into(),
            invocation: 1,
            method: http::Method::GET,
            path: path.into(),
            query: None,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            dynamic: None,
        }
    }

    fn status(responder: Option<Responder>) -> Option<u16> {
        match responder? {
            Responder::Canned(reply) => Some(reply.status),
            Responder::Computed(respond) => Some(respond(&request("/")).status),
        }
    }

    #[test]
    fn the_first_matching_mock_in_mounting_order_answers() {
        let mut set = MockSet::default();
        set.mount(Mock::given(path("/a")).respond_with(Reply::new(201)));
        set.mount(Mock::given(any()).respond_with(Reply::new(202)));
        set.mount(Mock::given(path("/a")).respond_with(Reply::new(203)));
        assert_eq!(status(set.choose(&request("/a"))), Some(201));
        assert_eq!(status(set.choose(&request("/b"))), Some(202));
        assert_eq!(
            set.usage(),
            [
                ("path == /a".to_owned(), 1),
                ("any request".to_owned(), 1),
                ("path == /a".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn a_used_up_mock_lets_the_next_one_answer() {
        let mut set = MockSet::default();
        set.mount(
            Mock::given(any())
                .respond_with(Reply::new(503))
                .up_to_n_times(2),
        );
        set.mount(Mock::given(any()).respond_with(Reply::new(200)));
        let answers: Vec<_> = (0..3).map(|_| status(set.choose(&request("/")))).collect();
        assert_eq!(answers, [Some(503), Some(503), Some(200)]);
    }

    #[test]
    fn no_match_is_none_and_counts_nothing() {
        let mut set = MockSet::default();
        set.mount(Mock::given(path("/a")).respond_with(Reply::new(200)));
        assert!(set.choose(&request("/b")).is_none());
        assert_eq!(set.usage()[0].1, 0);
    }

    #[test]
    fn unmet_expectations_are_listed_with_their_counts() {
        let mut set = MockSet::default();
        set.mount(
            Mock::given(path("/a"))
                .respond_with(Reply::new(200))
                .expect(1),
        );
        set.mount(
            Mock::given(path("/b"))
                .respond_with(Reply::new(200))
                .expect(1..),
        );
        set.mount(
            Mock::given(any())
                .respond_with(Reply::new(200))
                .expect(..=1),
        );
        set.choose(&request("/a"));
        set.choose(&request("/a"));
        set.choose(&request("/c"));
        assert_eq!(
            set.unmet(),
            [
                Unmet {
                    mock: "path == /a".into(),
                    expected: Times::from(1),
                    hits: 2
                },
                Unmet {
                    mock: "path == /b".into(),
                    expected: Times::from(1..),
                    hits: 0
                },
            ]
        );
    }
}
