#!/usr/bin/perl

# Everything the module does not answer itself reaches the MDM server as
# the device sent it, and the answer of the MDM server reaches the
# device: other check-in messages, GetToken for other services, bodies
# that are no plist, other content types, and the locations without the
# module.  Of these, only a TokenUpdate or an Authenticate that the MDM
# server accepts, with no Mdm-Signature or one that verifies, makes the
# module record the device (90-registry.t): the device messages here
# carry an Mdm-Signature of random bytes, which does not verify, so the
# module records nothing but the one TokenUpdate sent without it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;

use MdmWatch::Message qw(checkin get_token token_update authenticate
    command_result to_binary);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup;
my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my $checkin_type = $MdmWatch::Test::CHECKIN_TYPE;
my $checkin_uri = $MdmWatch::Test::CHECKIN_URI;

# a security token that no pass-through may touch
my $st = $t->challenge(UDID => $watch);
ok(defined $st, 'a watch has been challenged');
my @keys = $t->redis_keys('mdm_watch:*');

sub passes {
    my ($what, %o) = @_;
    my $method = $o{method} // 'PUT';
    my $uri = $o{uri} // $checkin_uri;
    my @headers = @{ $o{headers} // [] };
    unshift @headers, ['Content-Type', $o{type}] if defined $o{type};
    my $before = $t->upstream_count;

    my $res = $t->request(method => $method, uri => $uri,
        headers => \@headers, body => $o{body});
    is($res->{status}, $o{status} // 200,
        "$what is answered by the MDM server")
        or diag(MdmWatch::Test::describe($res));
    ok(exists $res->{headers}{'x-standin-request'},
        "$what: the answer comes from the MDM server");

    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received it once");
    $t->passed_ok($up[$before], method => $method, uri => $uri,
        body => $o{body} // '', headers => \@headers,
        name => "$what: the MDM server received it unchanged");

    # the module records after the answer: what it was to record for
    # this request is in Redis once the barrier's record is
    ok($t->registry_barrier, "$what: the module records again after it");
    if (defined $o{records}) {
        @keys = sort @keys, $t->device_key($o{records});
        is_deeply([$t->redis_keys('mdm_watch:*')], \@keys,
            "$what: Redis gains the record of the device, nothing else");
    } else {
        is_deeply([$t->redis_keys('mdm_watch:*')], \@keys,
            "$what: Redis is as it was");
    }
    return $res;
}

my $signature = encode_base64(MdmWatch::Test::random_bytes(1500), '');
my @device = (['Mdm-Signature', $signature],
    ['User-Agent', 'MDM/1.0 watchOS/10.0'], ['X-Device-Note', 'a  b']);

# check-in messages the MDM server answers

passes('a TokenUpdate', type => $checkin_type,
    body => token_update(udid => $watch), headers => \@device);
passes('an Authenticate', type => $checkin_type,
    body => authenticate(udid => $watch), headers => \@device);
passes('a CheckOut', type => $checkin_type, headers => \@device,
    body => checkin(MessageType => 'CheckOut', UDID => $watch,
        Topic => 'com.apple.mgmt.External.test'));
passes('a DeclarativeManagement check-in', type => $checkin_type,
    body => checkin(MessageType => 'DeclarativeManagement', UDID => $watch,
        Endpoint => 'tokens', Data => \'{}'));
passes('a command result, which has no MessageType', type => $checkin_type,
    body => command_result(udid => $watch), headers => \@device);
passes('a TokenUpdate as a binary plist', type => $checkin_type,
    body => to_binary(token_update(udid => $watch)));
passes('a user-channel TokenUpdate without UDID', type => $checkin_type,
    body => checkin(MessageType => 'TokenUpdate', EnrollmentUserID => 'u1',
        Token => \"\x01\x02", PushMagic => 'magic'));

my $res = passes('a GetToken for com.apple.maid', type => $checkin_type,
    headers => \@device,
    body => get_token(udid => $phone, service => 'com.apple.maid',
        security_token => $st, watch_udid => $watch));
like($res->{body}, qr/TokenData/, 'the MDM server answers the maid GetToken');

passes('a GetToken without TokenServiceType', type => $checkin_type,
    body => get_token(udid => $phone, service => undef,
        security_token => $st, watch_udid => $watch));

# bodies that are no check-in the module reads

passes('a check-in body that is no plist', type => $checkin_type,
    body => "\x00\x01 this is no plist \xff\xfe");
passes('a check-in plist that is an array', type => $checkin_type,
    body => qq{<?xml version="1.0" encoding="UTF-8"?>\n}
        . qq{<plist version="1.0"><array><string>GetToken</string>}
        . qq{</array></plist>\n});
passes('an empty check-in', type => $checkin_type, body => '');

passes('a watch pairing GetToken of another content type',
    type => 'application/x-apple-aspen-mdm',
    body => get_token(udid => $phone, security_token => $st,
        watch_udid => $watch));
passes('a watch pairing GetToken without a content type',
    body => get_token(udid => $phone, security_token => $st,
        watch_udid => $watch));
passes('a command result of another content type, as sent to ServerURL',
    type => 'application/x-apple-aspen-mdm', headers => \@device,
    body => command_result(udid => $watch, status => 'Error'));

# the answer of the MDM server, whatever it is

$res = passes('a TokenUpdate the MDM server refuses', type => $checkin_type,
    body => token_update(udid => $watch), status => 410,
    headers => [['X-Standin-Status', 410]]);
$res = passes('a command result the MDM server fails on',
    type => $checkin_type, body => command_result(udid => $watch),
    status => 500, headers => [['X-Standin-Status', 500]]);
passes('a check-in with a query string, an unsigned TokenUpdate the MDM'
    . ' server accepts', type => $checkin_type,
    uri => "$checkin_uri?channel=device",
    body => token_update(udid => $watch), records => $watch);

# locations without the module

$res = passes('a GET elsewhere', method => 'GET', uri => '/mdm/server?x=1',
    headers => [['Accept', '*/*']]);
is($res->{body}, "stand-in MDM server\n", 'its body is that of the server');
passes('a PUT of binary data elsewhere', uri => '/mdm/server',
    type => 'application/octet-stream',
    body => MdmWatch::Test::random_bytes(65536), headers => \@device);
passes('a watch pairing GetToken sent elsewhere', uri => '/mdm/server',
    type => $checkin_type,
    body => get_token(udid => $phone, security_token => $st,
        watch_udid => $watch));

is($t->redis('GET', "mdm_watch:security_token:$st"), $watch,
    'the security token is still unused');

$t->finish;
