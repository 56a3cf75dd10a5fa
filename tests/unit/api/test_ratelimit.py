"""hydra.api.ratelimit: the sliding window per client address."""



def test_sliding_window_allows_limit_per_window_per_key():
    from hydra.api.ratelimit import SlidingWindowLimiter

    limiter = SlidingWindowLimiter(limit=3, window=10.0, max_keys=2)
    decisions = [limiter.check("a", now=t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].reset_s == 7  # the hit at t=0 leaves the window at t=10
    assert limiter.check("a", now=10.5).allowed  # slid past the first hit
    assert limiter.check("b", now=10.5).allowed and limiter.check("c", now=10.5).allowed
    assert len(limiter._hits) == 2  # least recently seen key forgotten
