#!/usr/bin/perl

# A Redis that misbehaves, played by t/lib/fake-redis.pl on the Redis
# port: oversized, malformed and truncated replies, connections closed
# or reset, a Redis that stalls or answers late.  Each time the module
# answers 503 with Retry-After (500 for a well-formed reply of the wrong
# type, an internal failure), within mdm_watch_redis_timeout plus slack;
# its worker survives and serves other locations meanwhile; and when a
# real Redis comes back on the same port, the watches are served again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(get_token);
use MdmWatch::Test;

my $TIMEOUT = 0.5;          # mdm_watch_redis_timeout
my $SLACK = 1.0;
my $LIMIT = MdmWatch::Test::slow($TIMEOUT + $SLACK);

my $t = MdmWatch::Test->new;
$t->start_redis;
$t->start_upstream;
$t->write_config($t->default_http(redis_timeout => '500ms'));
$t->start_nginx;

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my $machine_info = $t->machine_info_body(UDID => $watch);
my $get_token = get_token(udid => $phone, watch_udid => $watch,
    security_token => MdmWatch::Test::random_uuid());
my $fake_log = $t->dir . '/fake-redis.log';

my ($worker) = $t->wait_workers(1);
$t->challenge_ok($t->enroll(body => $machine_info),
    'with a real Redis, a watch is challenged');

sub fake_log_since {
    my ($mark) = @_;
    return -f $fake_log ? substr(MdmWatch::Test::slurp($fake_log), $mark) : '';
}

# puts the fake in the place of Redis; returns the mark of its log
sub fake {
    my (@args) = @_;
    $t->stop_redis;
    my $start = -f $fake_log ? -s $fake_log : 0;
    $t->start_fake_redis(@args);

    # the harness's probe of the port is connection 1: past its close,
    # a connection is the module's
    my $deadline = time + 2;
    sleep 0.01 while fake_log_since($start) !~ /conn 1 closed/
        && time < $deadline;
    return -s $fake_log;
}

# sends requests until one reaches the fake (the first after the
# module's reconnection backoff), at most 3 s; returns that answer
sub first_contact {
    my ($mark, $send) = @_;
    my $deadline = time + MdmWatch::Test::slow(3);
    my $res;

    while (time < $deadline) {
        $res = $send->();
        return $res if fake_log_since($mark) =~ /conn \d+ open/;
        sleep 0.03;
    }
    $res->{no_contact} = 1;
    return $res;
}

sub enroll_req { $t->enroll(body => $machine_info, timeout => 5) }
sub get_token_req { $t->checkin($get_token, timeout => 5) }

sub answered_ok {
    my ($what, $res, $status, %o) = @_;
    my $max = $o{max} // $LIMIT;

    ok(!$res->{no_contact}, "$what: the module reached the fake Redis");
    is($res->{status}, $status, "$what is answered $status")
        or diag(MdmWatch::Test::describe($res));
    if ($status == 503) {
        is($res->{headers}{'retry-after'}, 5, "$what: Retry-After: 5");
    }
    ok(!exists $res->{headers}{'x-standin-request'},
        "$what: the answer does not come from the MDM server");
    cmp_ok($res->{elapsed}, '<', $max, "$what: answered within ${max}s");
    cmp_ok($res->{elapsed}, '>=', $o{min}, "$what: not before $o{min}s")
        if defined $o{min};
}

# a crash fails the case it happened in; the next cases follow the
# worker nginx started in its place
my $crashes = 0;

sub worker_survives {
    my ($what) = @_;
    my $res = $t->request(uri => '/plain', timeout => 3);
    is($res->{status}, 200, "$what: another location is served");

    my @workers = $t->wait_workers(1);
    is("@workers", $worker, "$what: the worker process is the same");
    $worker = $workers[0] if @workers == 1;

    my @new = ($t->crashes)[$crashes .. $t->crashes - 1];
    $crashes += @new;
    ok(!@new, "$what: no worker exited on a signal")
        or diag(join "\n", @new);
}

# a real Redis again on the same port; the watch is challenged within
# the longest backoff (5 s) plus slack
sub recovers {
    my ($what) = @_;
    $t->stop_redis;
    $t->start_redis;

    my $start = time;
    my $res;
    while (time - $start < MdmWatch::Test::slow(7)) {
        $res = $t->enroll(body => $machine_info, timeout => 3);
        last if defined MdmWatch::Test::challenge_token($res);
        sleep 0.05;
    }
    ok(defined MdmWatch::Test::challenge_token($res),
        "$what: with a real Redis back on the port, a watch is challenged"
        . ' again') or diag(MdmWatch::Test::describe($res));
    note(sprintf '%s: recovered in %.2fs', $what, time - $start);
}

# replies that are not RESP, or RESP cut short: 503 at once

my %broken = (
    'bad-type'           => 'a Redis replying with the type byte "!"',
    'negative-length'    => 'a Redis replying a bulk string of length -7',
    'negative-array'     => 'a Redis replying an array of -7 elements',
    'absurd-array'       => 'a Redis replying an array of 2^31-1'
                            . ' elements',
    'huge-array'         => 'a Redis replying an array of 2^63-1'
                            . ' elements',
    'non-numeric-length' => 'a Redis replying a bulk string of length'
                            . ' "12ab"',
    'non-numeric-array'  => 'a Redis replying an array of "xyz" elements',
    'deep-array'         => 'a Redis replying arrays nested 10000 deep',
    'close-mid-reply'    => 'a Redis closing the connection inside a bulk'
                            . ' string',
    'close-mid-line'     => 'a Redis closing the connection after "+OK"'
                            . ' without CRLF',
    'refuse'             => 'a Redis closing every connection it accepts',
    'reset'              => 'a Redis resetting the connection on the first'
                            . ' command',
    'error'              => 'a Redis replying an error (-ERR)',
);

for my $mode (sort keys %broken) {
    my $what = $broken{$mode};
    my $mark = fake('--mode', $mode);

    answered_ok("$what: a watch", first_contact($mark, \&enroll_req), 503);
    like(fake_log_since($mark), qr/cmd [A-Z]+/,
        "$what: the module had sent its command") unless $mode eq 'refuse';
    my $res = get_token_req();
    is($res->{status}, 503, "$what: a GetToken is answered 503 too")
        or diag(MdmWatch::Test::describe($res));
    cmp_ok($res->{elapsed}, '<', $LIMIT,
        "$what: the GetToken within the timeout");

    worker_survives($what);
    recovers($what);
}

# a reply announced as 64 MB of which 4 MB come: the module does not
# buffer it

{
    my $what = 'a Redis replying a bulk string announced as 64 MB';
    my $rss = MdmWatch::Test::rss_kb($worker);
    my $mark = fake('--mode', 'oversized', '--announce', 64 << 20,
        '--send', 4 << 20);

    answered_ok("$what: a watch", first_contact($mark, \&enroll_req), 503);
    my $grown = (MdmWatch::Test::rss_kb($worker) // 0) - ($rss // 0);
    cmp_ok($grown, '<', 2048,
        "$what: the worker grew by less than 2 MB (by $grown kB)");
    worker_survives($what);
    recovers($what);
}

# a well-formed reply of the wrong type is an internal failure

{
    my $what = 'a Redis replying an integer to SET';
    my $mark = fake('--mode', 'wrong-type');
    answered_ok("$what: a watch", first_contact($mark, \&enroll_req), 500);
    worker_survives($what);
    recovers($what);
}

# the fake speaks enough RESP: with scripted EVAL results, GetToken is
# answered as the script says

{
    my $what = 'a scripted Redis whose issuing script returns 1';
    my $mark = fake('--mode', 'normal', '--eval-reply', 1);
    my $res = first_contact($mark, \&get_token_req);
    is($res->{status}, 200, "$what: GetToken is answered 200")
        or diag(MdmWatch::Test::describe($res));
    ok(length(MdmWatch::Message::parse_token_data($res->{body}) // ''),
        "$what: with TokenData");

    $t->stop_redis;
    $mark = fake('--mode', 'normal', '--eval-reply', 0);
    $res = first_contact($mark, \&get_token_req);
    is($res->{status}, 403, 'a scripted Redis whose issuing script'
        . ' returns 0 (unknown security token): GetToken is answered 403');

    # the refusals of the phone: not enrolled, unsigned while an
    # identity is on record, signed by another device, and known as not
    # enrolled from the answer of mdm_watch_phone_check kept in Redis
    my %phone_refusals = (
        -2 => 'an unknown phone',
        -3 => 'an unsigned GetToken of a phone whose identity is on record',
        -4 => 'a GetToken signed by another device',
        -5 => 'a phone known not to be enrolled',
    );
    for my $code (sort { $b <=> $a } keys %phone_refusals) {
        $what = "a scripted Redis whose issuing script returns $code"
            . " ($phone_refusals{$code})";
        $mark = fake('--mode', 'normal', '--eval-reply', $code);
        $res = first_contact($mark, \&get_token_req);
        is($res->{status}, 403, "$what: GetToken is answered 403")
            or diag(MdmWatch::Test::describe($res));
        is(MdmWatch::Message::parse_token_data($res->{body}), undef,
            "$what: no TokenData");
        like(fake_log_since($mark), qr/cmd EVAL/,
            "$what: the module ran its script");
    }
    recovers('after the scripted Redis');
}

# a Redis that answers once, then closes the connection: every request
# is answered, the challenge or 503, and none waits

{
    my $what = 'a Redis closing each connection after one reply';
    my $mark = fake('--mode', 'disconnect-after-reply');
    my $res = first_contact($mark, \&enroll_req);
    $t->challenge_ok($res, "$what: the first watch is challenged");

    my @status;
    my $slowest = 0;
    for (1 .. 6) {
        $res = enroll_req();
        push @status, $res->{status} // 'none';
        $slowest = $res->{elapsed} if $res->{elapsed} > $slowest;
        sleep 0.05;
    }
    is_deeply([grep { !/^(?:403|503)$/ } @status], [],
        "$what: six more watches get the challenge or 503 (@status)");
    cmp_ok($slowest, '<', $LIMIT, "$what: each at once");
    worker_survives($what);
    recovers($what);
}

# replies nobody asked for, on which hiredis 0.14 aborts the process
# unless the module refuses them first: the worker survives, the
# connection is dropped, and every request is answered

{
    my %unasked = (
        'double-reply' => 'a Redis replying twice to every command',
        'unsolicited'  => 'a Redis sending "+OK" unasked on an idle'
                          . ' connection',
    );

    for my $mode (sort keys %unasked) {
        my $what = $unasked{$mode};
        my $mark = fake('--mode', $mode, '--delay-ms', 100);
        my $res = first_contact($mark, \&enroll_req);
        $t->challenge_ok($res, "$what: the first watch is challenged, by"
            . ' the first reply');
        sleep 0.3;

        $res = enroll_req();
        like($res->{status} // 'none', qr/^(?:403|503)$/,
            "$what: the next watch is answered, the challenge or 503")
            or diag(MdmWatch::Test::describe($res));
        cmp_ok($res->{elapsed}, '<', $LIMIT, "$what: at once");
        worker_survives($what);
        recovers($what);
    }
}

# a Redis that stalls: 503 after mdm_watch_redis_timeout, for every
# request waiting, while other locations answer at once

{
    my $what = 'a Redis that never answers';
    my $mark = fake('--mode', 'stall');
    answered_ok("$what: a watch", first_contact($mark, \&enroll_req), 503,
        min => $TIMEOUT - 0.05);

    # the stalled connection was dropped; a new one stalls again
    sleep 0.25;
    $mark = -s $fake_log;
    my $contact = first_contact($mark, \&enroll_req);
    my @pending = map {
        $t->send_request(method => 'POST', uri => $MdmWatch::Test::ENROLL_URI,
            headers => [['Content-Type', $MdmWatch::Test::CMS_TYPE]],
            body => $machine_info, timeout => 5)
    } 1 .. 3;
    my $plain = $t->request(uri => '/plain', timeout => 3);
    is($plain->{status}, 200,
        "$what: while watches wait, another location answers");
    cmp_ok($plain->{elapsed}, '<', MdmWatch::Test::slow(0.25),
        "$what: at once");
    my @answers = map { $t->read_response($_, 5) } @pending;
    is_deeply([map { $_->{status} // 'none' } $contact, @answers],
        [(503) x 4], "$what: four watches are answered 503");
    cmp_ok((sort { $b <=> $a } map { $_->{elapsed} } @answers)[0], '<',
        $LIMIT, "$what: all within the timeout plus slack");
    worker_survives($what);
    recovers($what);
}

# a slow Redis: late beyond the timeout is 503; late within it is fine

{
    my $what = 'a Redis answering 800 ms late';
    my $mark = fake('--mode', 'slow', '--delay-ms', 800);
    answered_ok("$what: a watch", first_contact($mark, \&enroll_req), 503,
        min => $TIMEOUT - 0.05);
    worker_survives($what);
    recovers($what);

    $what = 'a Redis answering 200 ms late, within the timeout';
    $mark = fake('--mode', 'slow', '--delay-ms', 200);
    my $res = first_contact($mark, \&enroll_req);
    $t->challenge_ok($res, "$what: a watch is challenged");
    cmp_ok($res->{elapsed}, '>=', 0.19, "$what: after the delay");
    worker_survives($what);
    recovers($what);
}

$t->finish;
