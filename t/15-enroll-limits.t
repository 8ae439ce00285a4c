#!/usr/bin/perl

# What bounds the enrollment location: machine info larger than the
# module reads is refused with 413, and a watch keeps only its last four
# security tokens, so that one machine info replayed without end cannot
# fill Redis, while a watch that asked more than once may use any of its
# last four.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message qw(machine_info);
use MdmWatch::Test;

my $t = MdmWatch::Test->new;
$t->start_redis;
$t->start_upstream;
$t->write_config($t->default_http(server => 'client_max_body_size 8m;'));
$t->start_nginx;

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';

# a body over 1 MB

my $mark = $t->log_mark;
my $res = $t->enroll(body => 'x' x (1024 * 1024 + 1));
is($res->{status}, 413, 'machine info over 1 MB is refused with 413');
is_deeply([$t->redis_keys('mdm_watch:*')], [],
    'machine info over 1 MB changes nothing in Redis');
is($t->upstream_count, 0, 'machine info over 1 MB reaches no MDM server');
$t->log_like(qr/\[info\][^\n]*machine info larger than 1048576 bytes/,
    'the refusal of large machine info is logged at info', $mark);

# one machine info, replayed, and the GetToken of a phone the module
# has recorded

$t->enroll_phone_ok($phone);

my $body = $t->machine_info_body(UDID => $watch);
my @tokens;

for my $i (1 .. 10) {
    my $st = MdmWatch::Test::challenge_token($t->enroll(body => $body));
    push @tokens, $st if defined $st;
}

is(scalar @tokens, 10, 'the same machine info sent ten times is '
    . 'challenged ten times');
is(scalar(() = $t->redis_keys('mdm_watch:security_token:*')), 4,
    'only four security tokens of the watch are alive');
is_deeply($t->redis('LRANGE', "mdm_watch:challenges:$watch", 0, -1),
    [reverse @tokens[6 .. 9]],
    'the watch keeps its four newest security tokens, newest first');
my $ttl = $t->redis_ttl("mdm_watch:challenges:$watch");
ok($ttl > 590 && $ttl <= 600,
    "the watch's list of security tokens expires with them")
    or diag("TTL $ttl");

$res = $t->get_token_response(udid => $phone, security_token => $tokens[5],
    watch_udid => $watch);
is($res->{status}, 403, 'a security token pushed out of the list is unknown');

$res = $t->get_token_response(udid => $phone, security_token => $tokens[6],
    watch_udid => $watch);
is($res->{status}, 200, 'the oldest of the four kept security tokens works');

my @other = map {
    MdmWatch::Test::challenge_token($t->enroll(UDID => "WATCH-$_"))
} 1 .. 3;
is(scalar(grep { defined } @other), 3, 'other watches are challenged');
is(scalar(() = $t->redis_keys('mdm_watch:security_token:*')), 3 + 3,
    'the security tokens of other watches are kept apart');

$t->finish;
